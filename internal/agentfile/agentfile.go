// Package agentfile reads and writes <home>/config/agent.yaml (DESIGN §5):
// the defaults of the flags of `drover agent`, one key per flag (its name
// with '_' for '-'). Parsing is strict: an unknown or repeated key, or a
// value of the wrong kind, is one error naming the file, line and key.
// Values come back as the flags would take them; the command layer sets
// the flags the command line and the environment left unset, so the
// agent package never sees this file.
package agentfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/service"
)

// Kinds of values.
const (
	KindString   Kind = iota
	KindPath          // a string; relative paths are relative to the home
	KindDuration      // 30s, 5m, 1h
	KindInt
	KindList // tags
	KindMap  // labels
	KindSize // a byte count: 4096, 10MB, 1.5GiB
)

// Kind is how a key's value is written.
type Kind int

// Key is a key of agent.yaml and the flag it gives a value.
type Key struct {
	Flag string // the flag's name; the key is Name()
	Env  string // the flag's environment variable, which beats the file; "" = none
	Kind Kind
}

// Name is the key: the flag's name with '_' for '-'.
func (k Key) Name() string { return strings.ReplaceAll(k.Flag, "-", "_") }

// Keys are every key of agent.yaml, in the order Marshal writes them.
var Keys = []Key{
	{"addr", "DROVER_ADDR", KindString}, {"ca-cert", "DROVER_CACERT", KindPath},
	{"client-cert", "DROVER_CLIENT_CERT", KindPath}, {"client-key", "DROVER_CLIENT_KEY", KindPath},
	{"tags", "", KindList}, {"labels", "", KindMap},
	{"software-root", "", KindPath}, {"runtime-root", "", KindPath}, {"root", "", KindPath},
	{"health-interval", "", KindDuration}, {"health-timeout", "", KindDuration},
	{"health-start-delay", "", KindDuration}, {"health-consecutive", "", KindInt},
	{"report-interval", "", KindDuration}, {"hook-timeout", "", KindDuration}, {"log-level", "", KindString},
	{"metadata-url", "DROVER_METADATA_URL", KindString},
	{"trust-root", "", KindPath},
	{"init-timeout", "", KindDuration},
	{"blob-mirror", "", KindList}, {"max-download-rate", "", KindSize},
}

// Path is where the agent with this home reads its file.
func Path(home string) string { return filepath.Join(home, "config", "agent.yaml") }

// Parse parses the file at path (its content is data) strictly and returns
// each key's value as its flag would take it, keyed by the flag's name.
// Relative paths become relative to home. An empty file gives nothing.
func Parse(path string, data []byte, home string) (map[string]string, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return map[string]string{}, nil // empty
	} else if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if dec.Decode(new(yaml.Node)) != io.EOF {
		return nil, fmt.Errorf("%s: want one YAML document", path)
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping of settings (addr: URL ...)", path, m.Line)
	}
	out := map[string]string{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		kn, vn := m.Content[i], m.Content[i+1]
		k, ok := Lookup(kn.Value)
		if !ok {
			return nil, fmt.Errorf("%s:%d: unknown key %q; keys are the flags of drover agent with '_' (addr, ca_cert, tags, health_interval ...)", path, kn.Line, kn.Value)
		}
		if _, dup := out[k.Flag]; dup {
			return nil, fmt.Errorf("%s:%d: %s: given twice", path, kn.Line, kn.Value)
		}
		v, err := fileValue(k, vn, home)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %v", path, vn.Line, kn.Value, err)
		}
		out[k.Flag] = v
	}
	return out, nil
}

// Lookup returns the key named name.
func Lookup(name string) (Key, bool) {
	for _, k := range Keys {
		if k.Name() == name {
			return k, true
		}
	}
	return Key{}, false
}

// fileValue returns what node n of key k means as a flag value.
func fileValue(k Key, n *yaml.Node, home string) (string, error) {
	scalar := func(n *yaml.Node) (string, bool) { return n.Value, n.Kind == yaml.ScalarNode && n.Tag != "!!null" }
	switch k.Kind {
	case KindList:
		var out []string
		for _, c := range n.Content {
			if s, ok := scalar(c); !ok || s == "" || strings.Contains(s, ",") {
				break
			}
			out = append(out, c.Value)
		}
		if n.Kind != yaml.SequenceNode || len(out) != len(n.Content) {
			return "", errors.New("want a list of values without commas, like [edge, lab]")
		}
		return strings.Join(out, ","), nil
	case KindMap:
		labels, kv := map[string]string{}, []string{}
		for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			lk, ok1 := scalar(n.Content[i])
			lv, ok2 := scalar(n.Content[i+1])
			if _, dup := labels[lk]; !ok1 || !ok2 || dup || lk == "" || strings.ContainsAny(lk, ",=") || strings.Contains(lv, ",") {
				return "", fmt.Errorf("line %d: want distinct key: value pairs without commas", n.Content[i].Line)
			}
			labels[lk] = lv
			kv = append(kv, lk+"="+lv)
		}
		if n.Kind != yaml.MappingNode {
			return "", errors.New("want a mapping of key: value, like {rack: a1}")
		}
		return strings.Join(kv, ","), service.CheckLabels(labels)
	}
	s, ok := scalar(n)
	if !ok || s == "" {
		return "", errors.New("want a single value")
	}
	switch k.Kind {
	case KindPath:
		if !filepath.IsAbs(s) {
			s = filepath.Join(home, s)
		}
	case KindDuration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return "", fmt.Errorf("%q is not a duration (like 30s, 5m, 1h)", s)
		}
		if d < 0 || d == 0 && k.Flag != "health-start-delay" {
			return "", fmt.Errorf("%s must be positive", s)
		}
	case KindInt:
		if i, err := strconv.Atoi(s); err != nil || i < 1 || i > 100 {
			return "", fmt.Errorf("%q: want a whole number from 1 to 100", s)
		}
	case KindSize:
		if _, err := api.ParseSize(s); err != nil {
			return "", err
		}
	}
	if k.Flag == "log-level" {
		var l slog.Level
		if l.UnmarshalText([]byte(s)) != nil {
			return "", fmt.Errorf("%q: want debug, info, warn or error", s)
		}
	}
	return s, nil
}

// Marshal returns agent.yaml holding vals, keyed by flag name, in the order
// of Keys, under a comment saying who wrote it. A value is a string, an int,
// a []string (tags) or a map[string]string (labels).
func Marshal(vals map[string]any, writer string) (string, error) {
	doc := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range Keys {
		v, ok := vals[k.Flag]
		if !ok {
			continue
		}
		var n yaml.Node
		if err := n.Encode(v); err != nil {
			return "", fmt.Errorf("%s: %w", k.Name(), err)
		}
		doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k.Name()}, &n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: the defaults of drover agent's flags (a flag given to\n"+
		"# drover agent wins, then DROVER_ADDR and the like). Edit, then restart the agent.\n", writer)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return "", err
	}
	return b.String(), enc.Close()
}
