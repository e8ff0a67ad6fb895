"""canarium_serving: the Open Inference Protocol (V2) model server used in every serving pod."""

__version__ = "0.1.0"
