package output

import (
	"io"
	"os"

	"github.com/mattn/go-isatty"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// IsTerminal reports whether w is a terminal, where progress bars and
// prompts make sense.
func IsTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// Bars shows the progress of steps as one bar per package and phase
// (download, install) on a terminal, with other lines printed above them.
// A set of bars is drawn while any runs; once the last one ends, lines
// are printed after them as plain lines. It is not safe for concurrent
// use.
type Bars struct {
	w     io.Writer
	p     *mpb.Progress // nil while no bar runs
	byPkg map[string]*phaseBar
}

type phaseBar struct {
	phase string
	bar   *mpb.Bar
}

// NewBars prepares progress bars on w, a terminal.
func NewBars(w io.Writer) *Bars {
	return &Bars{w: w, byPkg: map[string]*phaseBar{}}
}

// Update sets the bar of pkg's phase to done of total bytes; a new phase
// completes the package's bar of the previous one.
func (b *Bars) Update(pkg, phase string, done, total int64) {
	pb := b.byPkg[pkg]
	if pb != nil && pb.phase != phase {
		pb.bar.SetTotal(-1, true)
		pb = nil
	}
	if pb == nil {
		if b.p == nil {
			b.p = mpb.New(mpb.WithOutput(b.w), mpb.WithWidth(40), mpb.WithAutoRefresh())
		}
		name := pkg + " " + phase
		pb = &phaseBar{phase: phase, bar: b.p.AddBar(max(total, 1),
			mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f"), decor.Percentage(decor.WCSyncSpace)))}
		b.byPkg[pkg] = pb
	}
	if total > 0 {
		pb.bar.SetTotal(total, false)
	}
	pb.bar.SetCurrent(done)
}

// Finish ends pkg's bar: complete if ok, else aborted where it stopped.
// When it was the last bar running, the bars are drawn a last time.
func (b *Bars) Finish(pkg string, ok bool) {
	pb := b.byPkg[pkg]
	if pb == nil {
		return
	}
	if ok {
		pb.bar.SetTotal(-1, true)
	} else {
		pb.bar.Abort(false)
	}
	delete(b.byPkg, pkg)
	if len(b.byPkg) == 0 {
		b.p.Wait()
		b.p = nil
	}
}

// Println prints line above the running bars, or as a plain line when
// none runs.
func (b *Bars) Println(line string) error {
	var w io.Writer = b.w
	if b.p != nil {
		w = b.p
	}
	_, err := io.WriteString(w, line+"\n")
	return err
}

// Close ends the bars still running and waits until they are drawn.
func (b *Bars) Close() {
	for pkg := range b.byPkg {
		b.Finish(pkg, false)
	}
}
