package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/yamlerr"
)

// fileDoc is one YAML document of a state file.
type fileDoc struct {
	ID         string           `yaml:"id"`
	Group      string           `yaml:"group"`
	Selector   *string          `yaml:"selector"`
	SystemTags []string         `yaml:"systemtags"` // what `state get` prints of a device; ignored
	Apps       []api.DesiredApp `yaml:"apps"`
	Init       []api.InitEntry  `yaml:"init"`
	Pinned     []api.Pin        `yaml:"pinned"` // what `state get` prints; pinned again at set
}

// ParseDocuments reads a state file: YAML documents separated by `---`,
// each a device document (`id:`) or a group document (`group:` and
// `selector:`), strictly (an unknown field is an error, so a typo never
// silently changes a fleet). Errors are one line naming the document.
func ParseDocuments(data []byte) ([]api.Document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var out []api.Document
	seen := map[string]bool{}
	for n := 1; ; n++ {
		var fd fileDoc
		err := dec.Decode(&fd)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed desired state: %w", yamlerr.Describe(err, n))
		}
		d := api.Document{ID: fd.ID, Group: fd.Group, Apps: fd.Apps, Init: fd.Init}
		switch {
		case fd.ID != "" && fd.Group != "":
			return nil, fmt.Errorf("document %d names both id %q and group %q: a document is a device's or a group's", n, fd.ID, fd.Group)
		case fd.Group != "":
			d.Kind = api.DocGroup
			if !ValidGroupName(fd.Group) {
				return nil, fmt.Errorf("document %d: group %q: want a name of lowercase letters, digits and '-', at most 63 long", n, fd.Group)
			}
			if fd.Selector == nil {
				return nil, fmt.Errorf("group %s: no selector (write selector: \"\" to choose every device)", fd.Group)
			}
			d.Selector = *fd.Selector
			if _, err := Compile([]api.Document{d}); err != nil {
				return nil, err
			}
		case fd.ID != "":
			d.Kind = api.DocDevice
			if fd.Selector != nil {
				return nil, fmt.Errorf("device %s: a device document has no selector (a group document has group: and selector:)", fd.ID)
			}
			if fd.Init != nil {
				return nil, fmt.Errorf("device %s: %s", fd.ID, ErrDeviceInit)
			}
		default:
			return nil, fmt.Errorf("document %d has no id (a device) and no group", n)
		}
		who := d.ID
		if d.Kind == api.DocGroup {
			who = "group " + d.Group
		}
		if seen[d.Key()] {
			if d.Kind == api.DocDevice {
				return nil, fmt.Errorf("device %s has two desired states", d.ID)
			}
			return nil, fmt.Errorf("%s has two documents", who)
		}
		seen[d.Key()] = true
		if d.Apps == nil {
			d.Apps = []api.DesiredApp{}
		}
		for i, a := range d.Apps {
			if a.Name == "" {
				return nil, fmt.Errorf("%s: apps[%d]: no name", who, i)
			}
			if _, _, err := api.ParsePackageName(a.Name); err != nil {
				return nil, fmt.Errorf("%s: apps[%d]: %w", who, i, err)
			}
		}
		if err := CheckInit(d.Init); err != nil {
			return nil, fmt.Errorf("%s: %w", who, err)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, errors.New("empty state file")
	}
	return out, nil
}
