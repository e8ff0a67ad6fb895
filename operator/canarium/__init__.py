"""Canarium: a Kubernetes operator for declarative ML model deployments."""

__version__ = "0.1.0"
