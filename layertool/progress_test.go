package layertool

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressLine(t *testing.T) {
	p := NewProgress(&bytes.Buffer{}, "export")
	p.Add(3, 50<<20)
	if got := p.Line(10 * time.Second); got != "export  3 files  50.0 MiB  5.0 MiB/s" {
		t.Errorf("before the total is known: %q", got)
	}
	p.SetTotal(6, 100<<20)
	got := p.Line(10 * time.Second)
	for _, want := range []string{"[============>           ]", " 50%", "3/6 files", "50.0 MiB/100.0 MiB", "5.0 MiB/s", "ETA 0:10"} {
		if !strings.Contains(got, want) {
			t.Errorf("half done: %q lacks %q", got, want)
		}
	}
	p.Finish()
	if got := p.Line(2 * time.Hour); !strings.Contains(got, "100%") || !strings.Contains(got, "in 2:00:00") {
		t.Errorf("finished: %q", got)
	}
}

func TestProgressQuietOnShortRuns(t *testing.T) {
	var out bytes.Buffer
	p := NewProgress(&out, "merge")
	p.Delay = time.Hour
	p.Start()
	p.Add(1, 1)
	p.Stop()
	if out.Len() != 0 {
		t.Errorf("a run shorter than Delay drew %q", out.String())
	}
	var nilProgress *Progress // what tools get when there is no terminal
	nilProgress.Start()
	nilProgress.Add(1, 1)
	nilProgress.Stop()
}
