package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/blob"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/store"
)

func (s *Server) handlePush(w http.ResponseWriter, r *http.Request, p peer) error {
	ctx := r.Context()
	data, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxManifest+1))
	if err != nil {
		return api.Errorf(api.EINVALID, fmt.Sprintf("read manifest: %v", err))
	}
	if int64(len(data)) > s.cfg.MaxManifest {
		return api.Errorf(api.EINVALID, fmt.Sprintf("manifest over %d bytes", s.cfg.MaxManifest))
	}
	m, err := pkgfile.DecodeManifest(data)
	if err != nil {
		return api.Errorf(api.EINVALID, err.Error())
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	var missing []string
	var size int64
	stored := map[string]int64{}
	for _, d := range m.Digests() {
		if n, err := s.blobs.Stat(ctx, d); errors.Is(err, blob.ErrNotFound) {
			missing = append(missing, d)
		} else if err != nil {
			return err
		} else {
			stored[d] = n
		}
	}
	if len(missing) > 0 {
		return &api.Error{Code: api.ECONFLICT, Message: fmt.Sprintf("%s: %d blobs are not uploaded", m.Coordinate(), len(missing)), Missing: missing}
	}
	// A size the blob does not have would fail on every device.
	for _, f := range m.Files {
		if f.Type == api.TypeFile && stored[f.Digest] != f.Size {
			return api.Errorf(api.EINVALID, fmt.Sprintf("%s: file %s: the manifest says %d bytes, blob %s has %d", m.Coordinate(), f.Path, f.Size, f.Digest, stored[f.Digest]))
		}
	}
	for _, f := range m.Files {
		size += f.Size
	}
	// Pushing the same build again changes nothing and says so.
	same, err := s.store.Builds(ctx, m.Group+":"+m.Name)
	if err != nil {
		return err
	}
	for _, b := range same {
		if b.Digest == digest {
			b.AlreadyPushed = true
			writeJSON(w, http.StatusOK, b)
			return nil
		}
	}
	// The manifest is a blob too, so agents fetch it by its digest.
	if err := s.blobs.Put(ctx, digest, strings.NewReader(string(data))); err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	b := api.Build{
		Coordinate: m.Coordinate().String(), Tags: m.Tags, Digest: digest, Install: m.Install,
		Files: len(m.Files), Size: size, Pushed: s.now().UTC(),
	}
	if b.Tags == nil {
		b.Tags = []string{}
	}
	if err := s.store.PutBuild(ctx, b, data); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return api.Errorf(api.ECONFLICT, fmt.Sprintf("%s with tags [%s] was pushed before with other content; a pushed build never changes: give it a new version",
				b.Coordinate, strings.Join(b.Tags, ",")))
		}
		return err
	}
	// A new build reaches no device by itself: documents are pinned to
	// the builds that existed when they were set. So no resolution is
	// dropped and no long-poll woken.
	if err := s.res.loadCandidates(ctx); err != nil {
		return err
	}
	s.rep.tell(store.ChangeBuilds, "pushed")
	if err := s.emit(ctx, api.Event{Kind: api.KindPackage, Level: api.LevelInfo, Priority: api.PriorityLow, Package: b.Coordinate,
		Message: fmt.Sprintf("%s [%s] pushed by %s", b.Coordinate, strings.Join(b.Tags, ","), p.name)}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

// packagesRemoved reloads the candidates and wakes every agent: a
// device whose state used a removed build resolves to an error.
func (s *Server) packagesRemoved(ctx context.Context) error {
	if err := s.res.loadCandidates(ctx); err != nil {
		return err
	}
	s.rep.tell(store.ChangeBuilds, "removed")
	s.res.invalidateResolutions()
	s.hub.notifyAll()
	return nil
}

// inUse returns a device whose current resolution uses one of these
// builds, and the document that gave it ("" when none does).
func (s *Server) inUse(ctx context.Context, digests map[string]api.Build) (device, doc string, b api.Build, err error) {
	devs, err := s.store.Devices(ctx)
	if err != nil {
		return "", "", api.Build{}, err
	}
	for _, d := range devs {
		res, err := s.res.getFor(ctx, d)
		if err != nil {
			return "", "", api.Build{}, err
		}
		for _, app := range res.r.Apps {
			b, ok := digests[app.Digest]
			if !ok {
				continue
			}
			doc := "as a dependency"
			for _, e := range res.eff.Apps {
				if e.Name == app.Name && e.Instance == app.Instance {
					doc = "from " + e.Source
				}
			}
			return d.ID, doc, b, nil
		}
	}
	return "", "", api.Build{}, nil
}

func (s *Server) handlePackages(w http.ResponseWriter, r *http.Request, p peer) error {
	name := r.URL.Query().Get("name")
	if name != "" {
		if _, _, err := api.ParsePackageName(name); err != nil {
			return api.Errorf(api.EINVALID, err.Error())
		}
	}
	builds, err := s.store.Builds(r.Context(), name)
	if err != nil {
		return err
	}
	if builds == nil {
		builds = []api.Build{}
	}
	writeJSON(w, http.StatusOK, builds)
	return nil
}

func (s *Server) handleDeletePackage(w http.ResponseWriter, r *http.Request, p peer) error {
	coord := r.PathValue("coordinate")
	if _, err := api.ParseCoordinate(coord); err != nil {
		return api.Errorf(api.EINVALID, err.Error())
	}
	var tags []string
	if r.URL.Query().Has("tags") {
		tags = []string{}
		for _, t := range strings.Split(r.URL.Query().Get("tags"), ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
		tags = api.NormalizeTags(tags)
	}
	if r.URL.Query().Get("force") != "1" {
		c, _ := api.ParseCoordinate(coord)
		builds, err := s.store.Builds(r.Context(), c.PackageName())
		if err != nil {
			return err
		}
		doomed := map[string]api.Build{}
		for _, b := range builds {
			if b.Coordinate == coord && (tags == nil || slices.Equal(api.NormalizeTags(b.Tags), tags)) {
				doomed[b.Digest] = b
			}
		}
		dev, doc, b, err := s.inUse(r.Context(), doomed)
		if err != nil {
			return err
		}
		if dev != "" {
			return api.Errorf(api.ECONFLICT, fmt.Sprintf("%s [%s] is in use: device %s has it %s; set another state first, or remove it anyway with --force",
				b.Coordinate, strings.Join(b.Tags, ","), dev, doc))
		}
	}
	n, err := s.store.DeleteBuilds(r.Context(), coord, tags)
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.ENOTFOUND, fmt.Sprintf("no build of %s%s", coord, tagsNote(tags)))
	}
	if err != nil {
		return err
	}
	if err := s.packagesRemoved(r.Context()); err != nil {
		return err
	}
	if err := s.emit(r.Context(), api.Event{Kind: api.KindPackage, Level: api.LevelInfo, Priority: api.PriorityLow, Package: coord,
		Message: fmt.Sprintf("%s%s removed by %s (%d builds)", coord, tagsNote(tags), p.name, n)}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int{"deleted": n})
	return nil
}

func tagsNote(tags []string) string {
	if tags == nil {
		return ""
	}
	return " with tags [" + strings.Join(tags, ",") + "]"
}
