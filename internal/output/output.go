// Package output formats what a command prints: its result as text, YAML
// or JSON (-o), streams as JSON Lines or YAML documents, tables with
// aligned columns, and sizes in human units. Every verb prints through
// it, so the rules are the same everywhere:
//
//   - -o json of one object is one JSON object; of a list, one JSON array;
//   - -o yaml of a list is one YAML list;
//   - a stream (--follow) is JSON Lines with -o json (one object per line)
//     and YAML documents separated by "---" with -o yaml;
//   - text is for people: tables have a header and aligned columns.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"
)

// The formats of -o.
const (
	Text = "text"
	YAML = "yaml"
	JSON = "json"
)

// UnknownFormatError is an -o value a verb does not offer.
type UnknownFormatError struct {
	Format  string
	Allowed []string
}

func (e *UnknownFormatError) Error() string {
	return fmt.Sprintf("output format %q: want %s", e.Format, orList(e.Allowed))
}

func orList(xs []string) string {
	switch len(xs) {
	case 0:
		return "nothing"
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// Check refuses a format not in allowed, before anything is done.
func Check(format string, allowed ...string) error {
	if slices.Contains(allowed, format) {
		return nil
	}
	return &UnknownFormatError{Format: format, Allowed: allowed}
}

// Print writes v, one object or one list, as one YAML or JSON document.
// A nil slice prints as an empty list.
func Print(w io.Writer, format string, v any) error {
	switch format {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case YAML:
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return err
		}
		return enc.Close()
	}
	return &UnknownFormatError{Format: format, Allowed: []string{YAML, JSON}}
}

// Stream writes the items of a stream one at a time: JSON Lines, or YAML
// documents each opened by "---".
type Stream struct {
	w      io.Writer
	format string
}

// NewStream returns a stream of format (YAML or JSON) on w.
func NewStream(w io.Writer, format string) (*Stream, error) {
	if format != JSON && format != YAML {
		return nil, &UnknownFormatError{Format: format, Allowed: []string{YAML, JSON}}
	}
	return &Stream{w: w, format: format}, nil
}

// Write writes one item.
func (s *Stream) Write(v any) error {
	if s.format == JSON {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = s.w.Write(append(b, '\n'))
		return err
	}
	if _, err := io.WriteString(s.w, "---\n"); err != nil {
		return err
	}
	return Print(s.w, YAML, v)
}

// Table writes rows with aligned columns under a header.
type Table struct {
	tw *tabwriter.Writer
}

// NewTable starts a table on w with the given column names.
func NewTable(w io.Writer, header ...string) *Table {
	t := &Table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.Row(header...)
	return t
}

// Row adds one row; an empty cell shows as "-", and tabs or line breaks
// in a cell become spaces so a cell cannot forge columns or rows.
func (t *Table) Row(cells ...string) {
	for i, c := range cells {
		c = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, c)
		if c == "" {
			c = "-"
		}
		cells[i] = c
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// Flush writes the table out.
func (t *Table) Flush() error { return t.tw.Flush() }

// Bytes is n bytes in human units (IEC: KiB, MiB, ...), one decimal.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
