package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/internal/agentfile"
)

// <home>/config/agent.yaml holds the defaults of `drover agent`'s flags
// (DESIGN §5): a flag on the command line wins, then its environment
// variable (DROVER_ADDR ...), then the file, then the built-in default.

// applyAgentFile sets every flag that agent.yaml under home gives and
// neither the command line nor the environment does. No file is no error.
func applyAgentFile(fl *pflag.FlagSet, home string) error {
	path := agentfile.Path(home)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	vals, err := agentfile.Parse(path, data, home)
	if err != nil {
		return err
	}
	for _, k := range agentfile.Keys {
		v, ok := vals[k.Flag]
		if !ok || fl.Changed(k.Flag) || k.Env != "" && os.Getenv(k.Env) != "" {
			continue
		}
		if err := fl.Set(k.Flag, v); err != nil {
			return fmt.Errorf("%s: %s: %w", path, k.Name(), err)
		}
	}
	return nil
}

// agentFileYAML returns agent.yaml holding the agent flags given on the
// command line (`drover agent install`), paths made absolute.
func agentFileYAML(fl *pflag.FlagSet) (string, error) {
	vals := map[string]any{}
	for _, k := range agentfile.Keys {
		f := fl.Lookup(k.Flag)
		if f == nil || !f.Changed {
			continue
		}
		var v any = f.Value.String()
		var err error
		switch k.Kind {
		case agentfile.KindPath:
			v, err = filepath.Abs(f.Value.String())
		case agentfile.KindInt:
			v, err = strconv.Atoi(f.Value.String())
		case agentfile.KindList:
			if sv, ok := f.Value.(pflag.SliceValue); ok {
				v = sv.GetSlice()
			} else {
				v = splitList(f.Value.String())
			}
		case agentfile.KindMap:
			v, err = parseLabels(f.Value.String())
		}
		if err != nil {
			return "", err
		}
		vals[k.Flag] = v
	}
	return agentfile.Marshal(vals, "Written by 'drover agent install'")
}
