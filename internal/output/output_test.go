package output

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type item struct {
	Name string `json:"name" yaml:"name"`
	N    int    `json:"n" yaml:"n"`
}

func TestPrintList(t *testing.T) {
	items := []item{{"a", 1}, {"b", 2}}
	var jb bytes.Buffer
	if err := Print(&jb, JSON, items); err != nil {
		t.Fatal(err)
	}
	var back []item
	if err := json.Unmarshal(jb.Bytes(), &back); err != nil || len(back) != 2 {
		t.Fatalf("-o json of a list = %q: not one JSON array (%v)", jb.String(), err)
	}
	var yb bytes.Buffer
	if err := Print(&yb, YAML, items); err != nil {
		t.Fatal(err)
	}
	back = nil
	if err := yaml.Unmarshal(yb.Bytes(), &back); err != nil || len(back) != 2 {
		t.Fatalf("-o yaml of a list = %q: not one YAML list (%v)", yb.String(), err)
	}
}

func TestStream(t *testing.T) {
	var b bytes.Buffer
	s, err := NewStream(&b, JSON)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range []item{{"a", 1}, {"b\nc", 2}} {
		if err := s.Write(it); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("JSON Lines = %q: want 2 lines", b.String())
	}
	for _, l := range lines {
		var it item
		if err := json.Unmarshal([]byte(l), &it); err != nil {
			t.Errorf("line %q: %v", l, err)
		}
	}
	if _, err := NewStream(&b, Text); err == nil {
		t.Error("NewStream(text): no error")
	}
}

func TestCheck(t *testing.T) {
	if err := Check("json", Text, JSON); err != nil {
		t.Errorf("Check(json) = %v", err)
	}
	err := Check("xml", Text, YAML, JSON)
	if err == nil || err.Error() != `output format "xml": want text, yaml or json` {
		t.Errorf("Check(xml) = %v", err)
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	tb := NewTable(&b, "ID", "LABELS")
	tb.Row("device-1", "a=b")
	tb.Row("d\tforged\nrow", "")
	if err := tb.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "ID            LABELS\ndevice-1      a=b\nd forged row  -\n"
	if b.String() != want {
		t.Errorf("table =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestBytes(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {5 << 20, "5.0 MiB"}, {3 << 30, "3.0 GiB"}} {
		if got := Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
