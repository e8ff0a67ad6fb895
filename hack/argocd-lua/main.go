// Command argocd-lua runs one Argo CD health check, action discovery or action script against
// one Kubernetes object, so the tests of manifests/argocd see what Argo CD would see.
//
//	argocd-lua [-open-libs] health|discovery|action SCRIPT < object.json
//
// What Argo CD does (reference for the behaviour: argo-cd util/lua/lua.go): it runs the script in
// gopher-lua (Lua 5.1) with a one-second deadline, the live object as the global `obj` and the
// action's parameters as `actionParams`. Scripts from argocd-cm and actions get only the package,
// base and table libraries plus a restricted os (see oslib_safe.go); Argo CD's built-in health
// checks get every standard library (-open-libs here). The value the script returns is turned
// into JSON by gopher-json and read as
//   - health: {"status", "message"}; a status outside Argo CD's list becomes Unknown with a
//     message, nil or an empty table an empty status;
//   - discovery: a table of actions by name, each {"name", "disabled", ...};
//   - action: a list of {"operation": "patch"|"create", "resource"}, or (older scripts) the
//     object itself, taken as one "patch". Lua has one empty table for {} and [], and the JSON
//     encoder writes it as []; where the live object had an object, Argo CD puts {} back.
//
// This program is an independent re-implementation of that behaviour for our tests, not Argo
// CD's code. It prints the result as JSON on stdout. A failure goes to stderr and exits 1 when
// the script failed or returned what Argo CD refuses, 2 for bad usage or input.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// scriptTimeout is the deadline Argo CD gives a script.
const scriptTimeout = time.Second

// healthStatus is the health as Argo CD reports it; an empty message is left out.
type healthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// Argo CD's wording for results it does not accept, kept so messages match what users see.
const (
	msgWrongType     = "expect %s output from Lua script, not %s"
	msgInvalidStatus = "Lua returned an invalid health status"
)

// knownHealth are the statuses Argo CD accepts from a script.
var knownHealth = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

// action is one entry of a discovery result.
type action struct {
	Name        string `json:"name,omitempty"`
	Params      []any  `json:"params,omitempty"`
	Disabled    bool   `json:"disabled"`
	IconClass   string `json:"iconClass,omitempty"`
	DisplayName string `json:"displayName,omitempty"`
}

// impacted is one resource an action returns.
type impacted struct {
	Resource  map[string]any `json:"resource"`
	Operation string         `json:"operation"`
}

// evaluate runs script in a fresh interpreter set up as Argo CD sets it up and returns the last
// value the script returned (nil when none).
func evaluate(obj map[string]any, script string, openLibs bool) (lua.LValue, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	// Argo CD opens these whether or not every library is already open. Re-opening package
	// empties package.loaded, so require("os") gives the restricted os in both modes; with
	// -open-libs the `os` global stays gopher-lua's full library.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		opener := lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}
		if err := l.CallByParam(opener, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("opening the %s library: %w", lib.name, err)
		}
	}
	l.PreloadModule(lua.OsLibName, loadSafeOs)

	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	l.SetGlobal("actionParams", l.NewTable())

	if err := l.DoString(script); err != nil {
		// A runtime error carries a Go-side stack trace; the message alone is what matters.
		var apiErr *lua.ApiError
		if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = ""
		}
		return nil, err
	}
	return l.Get(-1), nil
}

// toLua converts a value decoded from JSON: objects become tables keyed by string, arrays
// tables keyed 1..n, numbers Lua numbers, null nil.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetString(key, toLua(l, item))
		}
		return t
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default: // nil, the only other thing encoding/json produces
		return lua.LNil
	}
}

// tableJSON checks that the script returned a table and encodes it.
func tableJSON(v lua.LValue) ([]byte, error) {
	if v.Type() != lua.LTTable {
		return nil, fmt.Errorf(msgWrongType, "table", v.Type())
	}
	return luajson.Encode(v)
}

func health(obj map[string]any, script string, openLibs bool) (*healthStatus, error) {
	ret, err := evaluate(obj, script, openLibs)
	if err != nil {
		return nil, err
	}
	if ret.Type() == lua.LTNil {
		return &healthStatus{}, nil
	}
	data, err := tableJSON(ret)
	if err != nil {
		return nil, err
	}
	var status healthStatus
	if err := json.Unmarshal(data, &status); err != nil {
		// An empty table is encoded as [] and means "no opinion", as does any array.
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Value == "array" {
			return &healthStatus{}, nil
		}
		return nil, err
	}
	if !knownHealth[status.Status] {
		return &healthStatus{Status: "Unknown", Message: msgInvalidStatus}, nil
	}
	return &status, nil
}

func discovery(obj map[string]any, script string, openLibs bool) (map[string]action, error) {
	ret, err := evaluate(obj, script, openLibs)
	if err != nil {
		return nil, err
	}
	data, err := tableJSON(ret)
	if err != nil {
		return nil, fmt.Errorf("encoding the returned table: %w", err)
	}
	actions := map[string]action{}
	if bytes.Equal(data, []byte("[]")) { // the empty table: no actions
		return actions, nil
	}
	var byName map[string]json.RawMessage
	if err := json.Unmarshal(data, &byName); err != nil {
		return nil, fmt.Errorf("reading the table of actions: %w", err)
	}
	for name, raw := range byName {
		a := action{Name: name}
		// An action given as {} (encoded []) has no settings: enabled, named by its key.
		if len(raw) > 0 && raw[0] != '[' {
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, fmt.Errorf("reading action %q: %w", name, err)
			}
		}
		actions[name] = a
	}
	return actions, nil
}

func runAction(obj map[string]any, script string, openLibs bool) ([]impacted, error) {
	ret, err := evaluate(obj, script, openLibs)
	if err != nil {
		return nil, err
	}
	data, err := tableJSON(ret)
	if err != nil {
		return nil, err
	}
	if len(data) < 2 {
		return nil, errors.New("Lua output was not a valid json object or array")
	}
	var result []impacted
	if data[0] == '[' {
		// New style: the list of impacted resources.
		if err := json.Unmarshal(data, &result); err != nil {
			return nil, err
		}
		for _, r := range result {
			if r.Operation != "patch" && r.Operation != "create" {
				return nil, fmt.Errorf("unsupported operation: %q", r.Operation)
			}
		}
	} else {
		// Old style: the changed object, which is a patch of itself.
		var changed map[string]any
		if err := json.Unmarshal(data, &changed); err != nil {
			return nil, err
		}
		result = []impacted{{Resource: changed, Operation: "patch"}}
	}
	for _, r := range result {
		if r.Operation == "patch" {
			restoreEmptyObjects(r.Resource, obj)
		}
	}
	return result, nil
}

// restoreEmptyObjects walks the returned value alongside the live one and, under an object key
// the live object also has, turns an empty array back into {} when the live value was an
// object (Lua lost the difference; see the package comment). Nested objects and the elements
// two arrays share are walked too; an array element itself is left as returned, as Argo CD
// leaves it. It changes maps and slices in place.
func restoreEmptyObjects(returned, live any) {
	switch r := returned.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return
		}
		for key, value := range r {
			liveValue, found := l[key]
			if !found {
				continue
			}
			if list, isList := value.([]any); isList && len(list) == 0 {
				if _, wasObject := liveValue.(map[string]any); wasObject {
					r[key] = map[string]any{}
					continue
				}
			}
			restoreEmptyObjects(value, liveValue)
		}
	case []any:
		l, ok := live.([]any)
		if !ok {
			return
		}
		for i := 0; i < len(r) && i < len(l); i++ {
			restoreEmptyObjects(r[i], l[i])
		}
	}
}

func main() {
	openLibs := flag.Bool("open-libs", false, "open every standard Lua library (as for Argo CD's built-in health checks)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua [-open-libs] health|discovery|action SCRIPT < object.json")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	mode, path := flag.Arg(0), flag.Arg(1)
	script, err := os.ReadFile(path)
	if err != nil {
		exit(2, err)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		exit(2, err)
	}
	// The API server hands Argo CD objects as JSON; numbers decode as float64.
	obj := map[string]any{}
	if err := json.Unmarshal(input, &obj); err != nil {
		exit(2, fmt.Errorf("the object on stdin is not a JSON object: %w", err))
	}
	var result any
	switch mode {
	case "health":
		result, err = health(obj, string(script), *openLibs)
	case "discovery":
		result, err = discovery(obj, string(script), *openLibs)
	case "action":
		result, err = runAction(obj, string(script), *openLibs)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		exit(1, err)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	if err := out.Encode(result); err != nil {
		exit(1, err)
	}
}

func exit(code int, err error) {
	fmt.Fprintln(os.Stderr, "argocd-lua:", err)
	os.Exit(code)
}
