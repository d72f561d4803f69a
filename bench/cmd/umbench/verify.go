package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// verifyAppend checks append-go: every .go file of the lower must be listed
// through the mount, once, as a regular file one byte longer. It returns
// the same summary for every candidate ("N files, S bytes"); a file
// missing, listed twice, unexpected or of the wrong size is an error, with
// what the mount shows of each missing file written to a report in -dir
// (see diagnoseMissing).
func verifyAppend(e *runEnv) (string, error) {
	_, err := e.shTree(`find . -name '*.go' -type f -printf '%s %P\n' > "$TMPDIR/got"`)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(e.scratch, "tmp", "got"))
	if err != nil {
		return "", err
	}
	got := map[string]int64{}
	var lines, total int64
	var dups []string
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		sz, name, _ := strings.Cut(line, " ")
		n, _ := strconv.ParseInt(sz, 10, 64)
		if _, ok := got[name]; ok {
			dups = append(dups, name)
		}
		got[name] = n
		lines++
		total += n
	}
	out := fmt.Sprintf("%d files, %d bytes", lines, total)
	want, err := lowerGoFiles(filepath.Join(e.lower, "go"))
	if err != nil {
		return out, err
	}
	var missing, wrong []string
	for name, sz := range want {
		g, ok := got[name]
		switch {
		case !ok:
			missing = append(missing, name)
		case g != sz+1:
			wrong = append(wrong, fmt.Sprintf("%s: %d bytes, want %d", name, g, sz+1))
		}
	}
	extra := 0
	for name := range got {
		if _, ok := want[name]; !ok {
			extra++
		}
	}
	if len(missing) == 0 && len(wrong) == 0 && extra == 0 && len(dups) == 0 {
		return out, nil
	}
	sort.Strings(missing)
	sort.Strings(wrong)
	for _, d := range dups {
		wrong = append(wrong, d+": listed more than once")
	}
	report := e.diagnoseMissing(missing, wrong)
	return out, fmt.Errorf("%s: %d of %d .go files missing, %d of the wrong size, %d listed twice, %d unexpected; details in %s",
		out, len(missing), len(want), len(wrong)-len(dups), len(dups), extra, report)
}

// lowerGoFiles lists the .go regular files under dir with their sizes.
func lowerGoFiles(dir string) (map[string]int64, error) {
	want := map[string]int64{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || !strings.HasSuffix(d.Name(), ".go") {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		want[rel] = fi.Size()
		return nil
	})
	return want, err
}

// diagnoseMissing writes, for each missing file (the first 20), what the
// upper and the lower have, what stat and listings of its directory
// through the mount show, and its directory's listing again after the
// kernel's dentries and inodes are dropped. It returns the report's path.
func (e *runEnv) diagnoseMissing(missing, wrong []string) string {
	report := filepath.Join(e.cfg.dir, fmt.Sprintf("mismatch-%s.txt", time.Now().Format("20060102-150405")))
	f, err := os.Create(report)
	if err != nil {
		return "(no report: " + err.Error() + ")"
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	defer w.Flush()
	run := func(dir, name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		fmt.Fprintf(w, "$ %s %s\n%s", name, strings.Join(args, " "), out)
		if err != nil {
			fmt.Fprintf(w, "(%v)\n", err)
		}
	}
	mgo := filepath.Join(e.mnt, "go")
	fmt.Fprintf(w, "missing %d:\n%s\nwrong size %d:\n%s\n", len(missing), strings.Join(missing, "\n"), len(wrong), strings.Join(wrong, "\n"))
	dirs := map[string]int{}
	for _, m := range missing {
		dirs[filepath.Dir(m)]++
	}
	fmt.Fprintf(w, "\nmissing by directory:\n")
	for d, n := range dirs {
		fmt.Fprintf(w, "%5d %s\n", n, d)
	}
	// Without -type f: listed with another type, or not at all?
	fmt.Fprintf(w, "\n== find without -type f, for the missing names\n")
	cmd := exec.Command("find", ".", "-name", "*.go", "-printf", "%y %s %P\n")
	cmd.Dir = mgo
	all, _ := cmd.Output()
	have := map[string]string{}
	for _, line := range strings.Split(string(all), "\n") {
		parts := strings.SplitN(line, " ", 3)
		if len(parts) == 3 {
			have[parts[2]] = parts[0] + " " + parts[1]
		}
	}
	for _, m := range missing {
		fmt.Fprintf(w, "%s: %q\n", m, have[m])
	}
	for i, m := range missing {
		if i == 20 {
			break
		}
		fmt.Fprintf(w, "\n==== %s\n", m)
		var st unix.Stat_t
		err := unix.Lstat(filepath.Join(e.upper, "go", m), &st)
		fmt.Fprintf(w, "upper lstat: err=%v mode=%o size=%d ino=%d\n", err, st.Mode, st.Size, st.Ino)
		err = unix.Lstat(filepath.Join(e.lower, "go", m), &st)
		fmt.Fprintf(w, "lower lstat: err=%v mode=%o size=%d ino=%d\n", err, st.Mode, st.Size, st.Ino)
		d := filepath.Join(mgo, filepath.Dir(m))
		err = unix.Lstat(d, &st)
		fmt.Fprintf(w, "mount dir lstat: err=%v mode=%o nlink=%d ino=%d\n", err, st.Mode, st.Nlink, st.Ino)
		if err := unix.Lstat(filepath.Join(e.upper, "go", filepath.Dir(m)), &st); err == nil {
			fmt.Fprintf(w, "upper dir ino=%d\n", st.Ino)
		}
		if err := unix.Lstat(filepath.Join(e.lower, "go", filepath.Dir(m)), &st); err == nil {
			fmt.Fprintf(w, "lower dir ino=%d\n", st.Ino)
		}
		run(d, "ls", "-fi")
		run(d, "ls", "-la")
		run(d, "stat", filepath.Base(m))
		run(d, "ls", "-fi")
	}
	fmt.Fprintf(w, "\n== after echo 2 > drop_caches\n")
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("2\n"), 0o644)
	for i, m := range missing {
		if i == 20 {
			break
		}
		d := filepath.Join(mgo, filepath.Dir(m))
		fmt.Fprintf(w, "\n==== %s\n", m)
		run(d, "ls", "-fi")
	}
	cmd = exec.Command("find", ".", "-name", "*.go", "-type", "f", "-printf", "%P\n")
	cmd.Dir = mgo
	again, _ := cmd.Output()
	fmt.Fprintf(w, "\n== find -type f again: %d names\n", strings.Count(string(again), "\n"))
	return report
}
