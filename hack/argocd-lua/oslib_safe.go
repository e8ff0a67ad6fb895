package main

// The restricted os library Argo CD hands to Lua scripts.
//
// Behaviour being reproduced (reference: argo-cd util/lua/oslib_safe.go and its use in
// util/lua/lua.go): scripts may read the clock and format dates, nothing else of os (no exit,
// execute, getenv, remove, ...). Argo CD wires the two functions up twice:
//   - as a library opener, which it registers under the *table* library's name; gopher-lua's
//     RegisterModule leaves an already loaded module as it is, and table is opened first, so
//     this adds nothing: scripts get no `os` global (nor table.time);
//   - as a preloaded module, so `require("os")` returns a table holding just time and date.
//
// With every library open the `os` global is gopher-lua's complete library, but require("os")
// still returns the restricted one: re-opening package (as Argo CD does) empties
// package.loaded, so require falls through to the preloaded module.
//
// This file is our own re-implementation of that behaviour for the tests. It does not write
// os.time or os.date itself: it borrows the Go functions behind gopher-lua's own os library,
// which is where Argo CD's versions come from as well.

import (
	"fmt"

	lua "github.com/yuin/gopher-lua"
)

// safeOsNames are the os functions a script may use.
var safeOsNames = []string{"time", "date"}

// safeOsFuncs holds gopher-lua's implementations of safeOsNames, looked up once at start-up.
var safeOsFuncs = borrowOsFuncs()

// borrowOsFuncs opens gopher-lua's full os library in a throwaway interpreter and keeps the Go
// functions of the allowed names. A builtin's *lua.LFunction carries its Go code in GFunction,
// which takes the calling LState as an argument, so it runs fine in any other state once the
// throwaway one is closed.
func borrowOsFuncs() map[string]lua.LGFunction {
	scratch := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer scratch.Close()
	scratch.Push(scratch.NewFunction(lua.OpenOs))
	scratch.Call(0, 1)
	osLib, ok := scratch.Get(-1).(*lua.LTable)
	if !ok {
		panic("gopher-lua's OpenOs did not return a table")
	}
	funcs := make(map[string]lua.LGFunction, len(safeOsNames))
	for _, name := range safeOsNames {
		fn, ok := osLib.RawGetString(name).(*lua.LFunction)
		if !ok || fn.GFunction == nil {
			panic(fmt.Sprintf("gopher-lua's os library has no Go function %q", name))
		}
		funcs[name] = fn.GFunction
	}
	return funcs
}

// openSafeOs is the library opener, registered as Argo CD registers it: under the table
// library's name, which is already loaded by then, so in practice it changes nothing (see above).
func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.TabLibName, safeOsFuncs))
	return 1
}

// loadSafeOs is the loader behind require("os"): a fresh table with only the allowed functions.
func loadSafeOs(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs))
	return 1
}
