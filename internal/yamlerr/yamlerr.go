// Package yamlerr rewrites the errors of the YAML decoder for people: they
// name the field and the line, never a Go type ("unknown field
// \"versoin\"", not "field versoin not found in type api.DesiredApp").
package yamlerr

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

var (
	// (?s): a field name or a value may hold newlines.
	unknownField = regexp.MustCompile(`(?s)^(line \d+): field (.+) not found in type \S+$`)
	wrongType    = regexp.MustCompile("(?s)^(line \\d+): cannot unmarshal !*(\\S*) (?:`(.*)` )?into (\\S+)$")
	alreadySet   = regexp.MustCompile(`(?s)^(line \d+): field (.+) already set in type \S+$`)
)

// Describe rewrites err, from decoding YAML document number doc (from 1;
// 0 = do not say), into one line without Go type names. Errors that are
// not the decoder's are returned as they are.
func Describe(err error, doc int) error {
	if err == nil {
		return nil
	}
	where := ""
	if doc > 0 {
		where = fmt.Sprintf("document %d, ", doc)
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		return fmt.Errorf("%s%s", where, msg)
	}
	parts := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		// One line, whatever the input held.
		parts = append(parts, where+strings.ReplaceAll(describe(e), "\n", `\n`))
	}
	return errors.New(strings.Join(parts, "; "))
}

func describe(e string) string {
	if m := unknownField.FindStringSubmatch(e); m != nil {
		return fmt.Sprintf("%s: unknown field %q", m[1], m[2])
	}
	if m := alreadySet.FindStringSubmatch(e); m != nil {
		return fmt.Sprintf("%s: field %q given twice", m[1], m[2])
	}
	if m := wrongType.FindStringSubmatch(e); m != nil {
		got := kinds[m[2]]
		if got == "" {
			got = "a value of an unknown tag"
		}
		if m[3] != "" {
			got = fmt.Sprintf("%q", m[3])
		}
		return fmt.Sprintf("%s: %s where %s is wanted", m[1], got, want(m[4]))
	}
	return e
}

// kinds names YAML node tags.
var kinds = map[string]string{
	"str": "a string", "int": "a number", "float": "a number", "bool": "true or false",
	"seq": "a list", "map": "a mapping", "null": "nothing",
}

// want names what a Go type accepts, in YAML's words.
func want(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "a mapping"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "time.Duration":
		return "a duration"
	}
	return "a mapping"
}
