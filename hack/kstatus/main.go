// Command kstatus prints what sigs.k8s.io/cli-utils' kstatus (the library Flux's
// kustomize-controller and `kubectl apply --prune`-style tools use to wait for resources)
// computes for one Kubernetes object, as the e2e tests need it from the real library.
//
// Usage: kstatus [FILE]   (the object as JSON, e.g. `kubectl get -o json`; stdin without FILE)
//
// It prints {"status": "Current|InProgress|Failed|Terminating", "message": "...",
// "conditions": [...]} on stdout, and exits 2 with the reason on stderr when the input is not
// one object.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type output struct {
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	var data []byte
	var err error
	switch len(args) {
	case 0:
		data, err = io.ReadAll(stdin)
	case 1:
		data, err = os.ReadFile(args[0])
	default:
		return fmt.Errorf("usage: kstatus [FILE]")
	}
	if err != nil {
		return err
	}
	// Unstructured's own decoder keeps integers as int64, which kstatus' generation checks
	// need (plain encoding/json would make them float64 and the checks would error).
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if obj.IsList() {
		return fmt.Errorf("got a %s: pass one object", obj.GetKind())
	}
	res, err := status.Compute(obj)
	if err != nil {
		return err
	}
	conditions := res.Conditions
	if conditions == nil {
		conditions = []status.Condition{}
	}
	enc := json.NewEncoder(stdout)
	return enc.Encode(output{Status: res.Status.String(), Message: res.Message, Conditions: conditions})
}
