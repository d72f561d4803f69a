package layertool

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Progress counts the files and bytes a tool has done against a total
// (which a counting pass may supply while the work runs) and redraws one
// line on a terminal: a bar, the rate and the time left. It draws nothing
// until the run has lasted Delay, so short runs stay quiet.
type Progress struct {
	// Label starts the line ("export", "merge").
	Label string
	// Delay is how long a run must last before the bar appears.
	Delay time.Duration
	// Interval is how often it is redrawn.
	Interval time.Duration

	out   io.Writer
	now   func() time.Time
	start time.Time

	files, bytes           atomic.Int64
	totalFiles, totalBytes atomic.Int64 // -1 while unknown

	mu    sync.Mutex
	shown bool
	stop  chan struct{}
	done  chan struct{}
}

// NewProgress returns a Progress drawing on out (a terminal).
func NewProgress(out io.Writer, label string) *Progress {
	p := &Progress{Label: label, Delay: time.Second, Interval: 200 * time.Millisecond, out: out, now: time.Now}
	p.totalFiles.Store(-1)
	p.totalBytes.Store(-1)
	return p
}

// Start starts the clock and the redrawing.
func (p *Progress) Start() {
	if p == nil {
		return
	}
	p.start = p.now()
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.Interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				if p.now().Sub(p.start) >= p.Delay {
					p.draw(false)
				}
			}
		}
	}()
}

// Add records files and bytes done.
func (p *Progress) Add(files, bytes int64) {
	if p == nil {
		return
	}
	p.files.Add(files)
	p.bytes.Add(bytes)
}

// SetTotal records how much there is to do in all.
func (p *Progress) SetTotal(files, bytes int64) {
	if p == nil {
		return
	}
	p.totalFiles.Store(files)
	p.totalBytes.Store(bytes)
}

// Finish says the work is complete: what was done is the total.
func (p *Progress) Finish() {
	if p == nil {
		return
	}
	p.SetTotal(p.files.Load(), p.bytes.Load())
}

// Stop stops redrawing; if the bar was shown, or the run lasted Delay, it
// is drawn a last time and the line ended.
func (p *Progress) Stop() {
	if p == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.done
	p.mu.Lock()
	shown := p.shown
	p.mu.Unlock()
	if shown || p.now().Sub(p.start) >= p.Delay {
		p.draw(true)
	}
}

func (p *Progress) draw(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shown = true
	end := "\x1b[K"
	if final {
		end += "\n"
	}
	fmt.Fprintf(p.out, "\r%s%s", p.Line(p.now().Sub(p.start)), end)
}

// Line is the progress line after elapsed time.
func (p *Progress) Line(elapsed time.Duration) string {
	files, bytes := p.files.Load(), p.bytes.Load()
	tf, tb := p.totalFiles.Load(), p.totalBytes.Load()
	secs := elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(bytes) / secs
	}
	var b strings.Builder
	b.WriteString(p.Label)
	if tb < 0 {
		fmt.Fprintf(&b, "  %d files  %s  %s/s", files, size(bytes), size(int64(rate)))
		return b.String()
	}
	// The share done: by bytes where there are any, else by files.
	frac := 1.0
	switch {
	case tb > 0:
		frac = float64(bytes) / float64(tb)
	case tf > 0:
		frac = float64(files) / float64(tf)
	}
	frac = min(max(frac, 0), 1)
	const width = 24
	n := int(frac * width)
	bar := strings.Repeat("=", n)
	if n < width {
		bar += ">" + strings.Repeat(" ", width-n-1)
	}
	fmt.Fprintf(&b, "  [%s] %3d%%  ", bar, int(frac*100))
	if tf >= 0 {
		fmt.Fprintf(&b, "%d/%d files  ", files, tf)
	} else {
		fmt.Fprintf(&b, "%d files  ", files)
	}
	fmt.Fprintf(&b, "%s/%s  %s/s", size(bytes), size(tb), size(int64(rate)))
	if frac < 1 && frac > 0 && secs > 0 {
		left := time.Duration(secs * (1 - frac) / frac * float64(time.Second))
		fmt.Fprintf(&b, "  ETA %s", clock(left))
	} else if frac >= 1 {
		fmt.Fprintf(&b, "  in %s", clock(elapsed))
	}
	return b.String()
}

// size formats a byte count with a binary unit.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n), 0
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	for f /= unit; f >= unit && u < len(units)-1; f /= unit {
		u++
	}
	return fmt.Sprintf("%.1f %s", f, units[u])
}

// clock formats a duration as m:ss or h:mm:ss.
func clock(d time.Duration) string {
	s := int64(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
