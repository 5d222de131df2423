package ui

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

// pageData is what every template sees.
type pageData struct {
	Title  string
	Nav    string // the section of the navigation bar to highlight
	CSRF   string
	User   string
	Error  string
	Notice string
	// Refresh, when set, makes the page's script reload the main part
	// every so many milliseconds.
	Refresh int
	Data    any
}

// Status of a device as the summary counts it.
const (
	statusConverged   = "converged"
	statusPending     = "pending"
	statusError       = "error"
	statusUnhealthy   = "unhealthy"
	statusTerminating = "terminating"
	statusUnset       = "no state"
)

// deviceStatus says in one word where a device stands. Terminating wins
// over everything, an error over health, unhealthy over convergence.
func deviceStatus(d api.Device) string {
	switch {
	case d.Termination != nil && d.Termination.State != api.TerminationHookFailed:
		return statusTerminating
	case d.Error != "":
		return statusError
	case unhealthy(d):
		return statusUnhealthy
	case d.Converged:
		return statusConverged
	case d.Desired == "":
		return statusUnset
	}
	return statusPending
}

// unhealthy is true when the device's health checks or one of its
// services say so (a service its peers cannot reach included).
func unhealthy(d api.Device) bool {
	if d.Health == api.HealthUnknown || d.Health == api.HealthTerminate {
		return true
	}
	for _, s := range d.Services {
		if s.State == api.ServiceFailed || s.Health == api.ServiceUnhealthy || s.Unreachable() {
			return true
		}
	}
	return false
}

// summary counts the fleet.
type summary struct {
	Total                                                    int
	Converged, Pending, Error, Unhealthy, Terminating, Unset int
	Problems                                                 []deviceRow // devices in error, unhealthy or terminating, first ones
}

func summarize(devs []api.Device, now time.Time) summary {
	var s summary
	s.Total = len(devs)
	for _, d := range devs {
		st := deviceStatus(d)
		switch st {
		case statusConverged:
			s.Converged++
		case statusPending:
			s.Pending++
		case statusError:
			s.Error++
		case statusUnhealthy:
			s.Unhealthy++
		case statusTerminating:
			s.Terminating++
		case statusUnset:
			s.Unset++
		}
		if (st == statusError || st == statusUnhealthy || st == statusTerminating) && len(s.Problems) < 20 {
			s.Problems = append(s.Problems, rowOf(d, now))
		}
	}
	return s
}

// deviceRow is one line of the devices table.
type deviceRow struct {
	ID        string
	Labels    []string
	Tags      []string
	Status    string
	Health    string
	Installed []string
	Desired   string
	Error     string
	LastSeen  string
	Seen      time.Time
}

func rowOf(d api.Device, now time.Time) deviceRow {
	r := deviceRow{ID: d.ID, Tags: d.Tags, Status: deviceStatus(d), Health: d.Health, Error: d.Error,
		LastSeen: ago(now, d.LastSeen), Seen: d.LastSeen}
	for k, v := range d.Labels {
		r.Labels = append(r.Labels, k+"="+v)
	}
	slices.Sort(r.Labels)
	for _, a := range d.Installed {
		name := a.Name
		if a.Instance != "" {
			name += "[" + a.Instance + "]"
		}
		r.Installed = append(r.Installed, name+" "+a.Version)
	}
	switch {
	case d.Desired == "":
		r.Desired = "none set"
	case d.Converged:
		r.Desired = "converged"
	default:
		r.Desired = "pending " + short(d.Desired)
	}
	return r
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// ago writes a time as "12s ago", "3m ago", "5h ago" or a date.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.UTC().Format("2006-01-02")
}

// deviceCache keeps the list of devices for up to maxAge, so that a page
// refreshing itself every few seconds in several browsers reads the store
// once, not once per browser and request.
type deviceCache struct {
	be     Backend
	now    func() time.Time
	maxAge time.Duration

	mu   sync.Mutex
	at   time.Time
	devs []api.Device
}

func (c *deviceCache) get(ctx context.Context) ([]api.Device, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.devs != nil && c.now().Sub(c.at) < c.maxAge {
		return c.devs, nil
	}
	devs, err := c.be.Devices(ctx)
	if err != nil {
		return nil, err
	}
	c.devs, c.at = devs, c.now()
	return devs, nil
}

func (u *UI) handleSummary(w http.ResponseWriter, r *http.Request, s session) {
	devs, err := u.snapshot.get(r.Context())
	if err != nil {
		u.backendError(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "summary", u.data(s, "summary", "Fleet", 3000, summarize(devs, u.now())))
}

// devicesPage is the devices table with its filter and paging.
type devicesPage struct {
	Query       string
	QueryError  string
	Rows        []deviceRow
	Page, Pages int
	Total       int // devices matching the filter
	All         int // devices in the fleet
	First, Last int // 1-based positions of the rows shown
	Prev, Next  string
}

func (u *UI) handleDevices(w http.ResponseWriter, r *http.Request, s session) {
	devs, err := u.snapshot.get(r.Context())
	if err != nil {
		u.backendError(w, r, err)
		return
	}
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	p := devicesPage{Query: q, All: len(devs)}
	match, err := u.cfg.Match(q)
	if err != nil {
		p.QueryError = err.Error()
		match = func(api.Device) bool { return false }
	}
	hits := devs // no filter: the list as it is, nothing copied
	if q != "" {
		hits = nil
		for i := range devs {
			if match(devs[i]) {
				hits = append(hits, devs[i])
			}
		}
	}
	p.Total = len(hits)
	size := u.cfg.PageSize
	p.Pages = max(1, (len(hits)+size-1)/size)
	p.Page, _ = strconv.Atoi(r.URL.Query().Get("page"))
	p.Page = min(max(p.Page, 1), p.Pages)
	from, to := (p.Page-1)*size, min(p.Page*size, len(hits))
	now := u.now()
	for _, d := range hits[from:to] {
		p.Rows = append(p.Rows, rowOf(d, now))
	}
	if len(p.Rows) > 0 {
		p.First, p.Last = from+1, to
	}
	link := func(page int) string {
		v := url.Values{}
		if q != "" {
			v.Set("q", q)
		}
		v.Set("page", strconv.Itoa(page))
		return "/ui/devices?" + v.Encode()
	}
	if p.Page > 1 {
		p.Prev = link(p.Page - 1)
	}
	if p.Page < p.Pages {
		p.Next = link(p.Page + 1)
	}
	status := http.StatusOK
	if p.QueryError != "" {
		status = http.StatusBadRequest
	}
	u.render(w, r, status, "devices", u.data(s, "devices", "Devices", 3000, p))
}

// deviceDetail is one device's page.
type deviceDetail struct {
	Row    deviceRow
	Device api.Device
	Events []eventRow
}

func (u *UI) handleDevice(w http.ResponseWriter, r *http.Request, s session) {
	id := r.PathValue("id")
	d, err := u.be.Device(r.Context(), id)
	if err != nil {
		u.backendError(w, r, err)
		return
	}
	evs, err := u.be.Events(r.Context(), EventFilter{Device: id, Limit: 50})
	if err != nil {
		u.backendError(w, r, err)
		return
	}
	now := u.now()
	u.render(w, r, http.StatusOK, "device", u.data(s, "devices", "Device "+id, 3000,
		deviceDetail{Row: rowOf(d, now), Device: d, Events: eventRows(evs, true)}))
}

// eventRow is one line of an events table.
type eventRow struct {
	ID                                     int64
	Time                                   string
	Device, Kind, Level, Priority, Package string
	Message                                string
}

// eventRows turns events into rows, newest first when newestFirst.
func eventRows(evs []api.Event, newestFirst bool) []eventRow {
	rows := make([]eventRow, 0, len(evs))
	for _, e := range evs {
		rows = append(rows, eventRow{ID: e.ID, Time: e.Time.UTC().Format("2006-01-02 15:04:05"), Device: e.Device,
			Kind: e.Kind, Level: e.Level, Priority: e.Priority, Package: e.Package, Message: e.Message})
	}
	if newestFirst {
		slices.Reverse(rows)
	}
	return rows
}

// eventsPage is the live feed's first screen.
type eventsPage struct {
	Min    string
	Stream string // the SSE URL the script follows
	Rows   []eventRow
}

func minPriority(r *http.Request) string {
	switch p := r.URL.Query().Get("min"); p {
	case api.PriorityLow, api.PriorityHigh:
		return p
	}
	return api.PriorityMedium
}

func (u *UI) handleEvents(w http.ResponseWriter, r *http.Request, s session) {
	minp := minPriority(r)
	evs, err := u.be.Events(r.Context(), EventFilter{MinPriority: minp, Limit: 100})
	if err != nil {
		u.backendError(w, r, err)
		return
	}
	after := int64(0)
	if len(evs) > 0 {
		after = evs[len(evs)-1].ID
	}
	p := eventsPage{Min: minp, Rows: eventRows(evs, true),
		Stream: "/ui/events/stream?" + url.Values{"min": {minp}, "after": {strconv.FormatInt(after, 10)}}.Encode()}
	u.render(w, r, http.StatusOK, "events", u.data(s, "events", "Events", 0, p))
}

func (u *UI) handleStream(w http.ResponseWriter, r *http.Request, s session) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	f := EventFilter{After: max(after, 0), MinPriority: minPriority(r), Device: r.URL.Query().Get("device")}
	if err := u.be.Follow(w, r, f); err != nil {
		u.backendError(w, r, err)
	}
}

// rolloutsPage lists rollouts.
type rolloutsPage struct {
	Rollouts []rolloutRow
}

// rolloutRow is one rollout in the list.
type rolloutRow struct {
	Name, Phase, Reason string
	Wave, Waves         int
	Devices             int
	Failed              int
	Created             string
}

func rowOfRollout(ro api.Rollout, now time.Time) rolloutRow {
	row := rolloutRow{Name: ro.Name, Phase: ro.Phase, Reason: ro.Reason, Wave: ro.Wave + 1,
		Waves: len(ro.Stages), Devices: len(ro.Devices), Created: ago(now, ro.Created)}
	for _, d := range ro.Devices {
		if d.Outcome == api.OutcomeFailed {
			row.Failed++
		}
	}
	return row
}

func (u *UI) handleRollouts(w http.ResponseWriter, r *http.Request, s session) {
	ros, err := u.be.Rollouts(r.Context())
	if err != nil {
		u.backendError(w, r, err)
		return
	}
	var p rolloutsPage
	now := u.now()
	for _, ro := range ros {
		p.Rollouts = append(p.Rollouts, rowOfRollout(ro, now))
	}
	u.render(w, r, http.StatusOK, "rollouts", u.data(s, "rollouts", "Rollouts", 3000, p))
}

// rolloutDetail is one rollout's page.
type rolloutDetail struct {
	Row     rolloutRow
	Rollout api.Rollout
	Stages  []stageRow
	// Actions are the buttons that make sense in the rollout's phase.
	Actions []action
}

// stageRow is one wave of a rollout.
type stageRow struct {
	N        int
	Size     int
	State    string
	Failures int
	Devices  []api.RolloutDevice
}

// action is a button on a rollout's page.
type action struct {
	Name, Label string
	Danger      bool
}

func actionsFor(phase string) []action {
	switch phase {
	case api.RolloutRunning:
		return []action{{"pause", "Pause", false}, {"abort", "Abort", true}, {"abort-revert", "Abort and revert", true}}
	case api.RolloutPaused:
		return []action{{"resume", "Resume", false}, {"abort", "Abort", true}, {"abort-revert", "Abort and revert", true}}
	}
	return nil
}

func (u *UI) handleRollout(w http.ResponseWriter, r *http.Request, s session) {
	ro, err := u.be.Rollout(r.Context(), r.PathValue("name"))
	if err != nil {
		u.backendError(w, r, err)
		return
	}
	p := rolloutDetail{Row: rowOfRollout(ro, u.now()), Rollout: ro, Actions: actionsFor(ro.Phase)}
	byWave := map[int][]api.RolloutDevice{}
	for _, d := range ro.Devices {
		byWave[d.Wave] = append(byWave[d.Wave], d)
	}
	for i, st := range ro.Stages {
		state := "pending"
		switch {
		case !st.Passed.IsZero():
			state = "passed"
		case !st.Soaking.IsZero():
			state = "soaking since " + ago(u.now(), st.Soaking)
		case !st.Started.IsZero():
			state = "converging"
		}
		if st.Failures > 0 {
			state += fmt.Sprintf(", %d failed", st.Failures)
		}
		p.Stages = append(p.Stages, stageRow{N: i + 1, Size: st.Size, State: state, Failures: st.Failures, Devices: byWave[i]})
	}
	u.render(w, r, http.StatusOK, "rollout", u.data(s, "rollouts", "Rollout "+ro.Name, 2000, p))
}

func (u *UI) handleRolloutAction(w http.ResponseWriter, r *http.Request, s session) {
	name, act := r.PathValue("name"), r.PathValue("action")
	switch act {
	case "pause", "resume", "abort", "abort-revert":
	default:
		u.fail(w, r, http.StatusNotFound, fmt.Sprintf("no action %q", act))
		return
	}
	if err := u.be.RolloutAction(r.Context(), name, act, s.user); err != nil {
		u.backendError(w, r, err)
		return
	}
	u.log.Info("rollout action from the fleet page", "rollout", name, "action", act, "user", s.user)
	http.Redirect(w, r, "/ui/rollouts/"+url.PathEscape(name), http.StatusSeeOther)
}

// packageRow is one package with its builds.
type packageRow struct {
	Name   string
	Builds []buildRow
}

// buildRow is one build of a package.
type buildRow struct {
	Version, Install, Digest, Size, Pushed string
	Tags                                   []string
	Files                                  int
}

func (u *UI) handlePackages(w http.ResponseWriter, r *http.Request, s session) {
	bs, err := u.be.Builds(r.Context())
	if err != nil {
		u.backendError(w, r, err)
		return
	}
	var rows []packageRow
	now := u.now()
	for _, b := range bs {
		name, version := b.Coordinate, ""
		if i := strings.LastIndexByte(b.Coordinate, ':'); i >= 0 {
			name, version = b.Coordinate[:i], b.Coordinate[i+1:]
		}
		if len(rows) == 0 || rows[len(rows)-1].Name != name {
			rows = append(rows, packageRow{Name: name})
		}
		last := &rows[len(rows)-1]
		last.Builds = append(last.Builds, buildRow{Version: version, Install: b.Install, Digest: short(b.Digest),
			Size: humanBytes(b.Size), Pushed: ago(now, b.Pushed), Tags: b.Tags, Files: b.Files})
	}
	u.render(w, r, http.StatusOK, "packages", u.data(s, "packages", "Packages", 0, rows))
}

// humanBytes writes a size in binary units (1.5 MiB).
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (u *UI) data(s session, nav, title string, refresh int, v any) pageData {
	return pageData{Title: title, Nav: nav, CSRF: s.csrf, User: s.user, Refresh: refresh, Data: v}
}

// pageNames are the templates that are whole pages; each file defines
// "content", laid into layout.html.
var pageNames = []string{"login", "error", "summary", "devices", "device", "events", "rollouts", "rollout", "packages"}

func (u *UI) funcs() template.FuncMap {
	return template.FuncMap{
		"join":  strings.Join,
		"short": short,
		"ago":   func(t time.Time) string { return ago(u.now(), t) },
		"pct": func(n, total int) string {
			if total == 0 {
				return "0"
			}
			return strconv.Itoa(n * 100 / total)
		},
	}
}

func parsePages(funcs template.FuncMap) (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("fleet page template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes a page, or only its main part when the page's script
// asks for it to refresh itself (X-Drover-Fragment).
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name string, d pageData) {
	t := u.pages[name]
	tmpl := "layout.html"
	if r.Header.Get("X-Drover-Fragment") == "1" {
		tmpl = "content"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, tmpl, d); err != nil {
		u.log.Error("fleet page render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
