package e2e

// The long variant of the union root: a real Debian root made by
// `debootstrap --variant=minbase bookworm` as the lower, and a package
// administrator's session inside the union (apt-get update, install and
// remove, useradd, ldconfig, dpkg --verify). Too slow and too dependent on
// the network for CI: `make rootfs-debian` runs it (E2E_LONG=1).

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// debianSteps is the session, one chrooted bash script per step so that
// each is timed on its own.
var debianSteps = []struct{ name, script string }{
	{"apt-get update", "apt-get update -q"},
	{"apt-get install (5 packages)", "apt-get install -y -q --no-install-recommends less iputils-ping libcap2-bin procps file"},
	{"useradd -m, chpasswd, su", `useradd -m -s /bin/bash -c Bob bob
echo bob:s3cret | chpasswd
su bob -c 'echo "notes of $(id -un)" > ~/notes && ls -a ~' && id bob`},
	{"edit /etc", `sed -i 's/^#force_color_prompt=yes/force_color_prompt=yes/' /etc/skel/.bashrc
echo unionbox > /etc/hostname
printf 'Acquire::Languages "none";\n' > /etc/apt/apt.conf.d/99nolang
chmod 0600 /etc/debian_version`},
	{"apt-get remove (2 packages)", "apt-get remove -y -q file procps"},
	{"ldconfig", "ldconfig"},
	{"dpkg --verify, --audit", "dpkg --verify || true; dpkg --audit"},
	{"check the result", `getcap /usr/bin/ping
dpkg -s less iputils-ping 2>&1 | grep '^Status'
if dpkg -s procps 2>/dev/null | grep -q '^Status: install'; then echo "procps still installed"; exit 1; fi
ls -ln /home/bob/notes | cut -d' ' -f1-4`},
}

// debianWant is what the last two steps must print: dpkg --verify reports
// the one conffile the session edited (its md5sum, "5"), and nothing else.
var debianWant = map[string]string{
	"dpkg --verify, --audit": "??5?????? c /etc/skel/.bashrc\n",
	"check the result": "/usr/bin/ping cap_net_raw=ep\n" +
		"Status: install ok installed\nStatus: install ok installed\n" +
		"-rw-r--r-- 1 1000 1000\n",
}

// debianRoot returns a minbase bookworm root: $E2E_DEBIAN_ROOT if it holds
// one (made by an earlier run: it is only ever used as a lower), else one
// made now by debootstrap, into $E2E_DEBIAN_ROOT when set (kept for the
// next run) or into a temporary directory.
func debianRoot(t *testing.T) string {
	t.Helper()
	root := os.Getenv("E2E_DEBIAN_ROOT")
	done := func(root string) string { return root + ".debootstrap-done" }
	if root != "" {
		if _, err := os.Stat(done(root)); err == nil {
			return root
		}
		if err := os.RemoveAll(root); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		root = filepath.Join(t.TempDir(), "debian")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatalf("debootstrap not installed (make rootfs-debian installs it): %v", err)
	}
	mirror := os.Getenv("E2E_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	start := time.Now()
	cmd := exec.Command("debootstrap", "--variant=minbase", "bookworm", root, mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debootstrap --variant=minbase bookworm %s %s: %v\n%s", root, mirror, err, lastLines(string(out), 40))
	}
	t.Logf("debootstrap --variant=minbase bookworm: %.1fs", time.Since(start).Seconds())
	if err := os.WriteFile(done(root), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestUnionRootDebian runs debianSteps in a Debian root mounted with each
// overlay filesystem, and checks for unionmount: every step succeeds and
// dpkg --verify finds nothing; the lower is unchanged; directories copied
// up keep their mtimes as kernel overlayfs keeps them (and everything else
// that is not time- or network-dependent equals the kernel's run); the
// upper holds exactly the changes; lower+upper read by kernel overlayfs
// after unmounting show what the mount showed.
func TestUnionRootDebian(t *testing.T) {
	if os.Getenv("E2E_LONG") != "1" {
		t.Skip("long test (debootstrap, apt-get from the Debian mirror): run `make rootfs-debian` (E2E_LONG=1)")
	}
	requireMountable(t)
	start := time.Now()
	lower := debianRoot(t)
	base := t.TempDir()
	var lowerBefore map[string]string
	var lowerTree Tree
	var tm timings
	tm.time("fingerprint + snapshot of the lower", kindKernel, func() {
		lowerBefore = fingerprint(t, lower)
		lowerTree = snapshot(t, lower)
	})

	type result struct {
		outputs     map[string]string
		merged      Tree
		upper, work string
	}
	results := map[overlayKind]result{}
	for _, kind := range overlayKinds(t, false) {
		upper, work := filepath.Join(base, string(kind)+"-upper"), filepath.Join(base, string(kind)+"-work")
		for _, d := range []string{upper, work} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		var mnt string
		tm.time("mount", kind, func() { mnt = mountOverlay(t, kind, []string{lower}, upper, work) })
		bindMount(t, "/proc", filepath.Join(mnt, "proc"))
		bindMount(t, "/dev", filepath.Join(mnt, "dev"))
		bindMount(t, "/dev/pts", filepath.Join(mnt, "dev/pts")) // apt logs through a pty
		res := result{outputs: map[string]string{}, upper: upper, work: work}
		failed := false
		for _, step := range debianSteps {
			var out string
			var err error
			tm.time(step.name, kind, func() {
				out, err = chrootBash(mnt, step.script)
			})
			res.outputs[step.name] = out
			if err != nil {
				t.Errorf("%s: %s: %v\n%s", kind, step.name, err, lastLines(out, 40))
				failed = true
				break
			}
		}
		unbind(t, filepath.Join(mnt, "dev/pts"))
		unbind(t, filepath.Join(mnt, "dev"))
		unbind(t, filepath.Join(mnt, "proc"))
		tm.time("snapshot of the merged tree", kind, func() { res.merged = snapshot(t, mnt) })
		tm.time("unmount", kind, func() { unmount(t, mnt) })
		results[kind] = res
		if failed && kind == kindUnionmount {
			break
		}
	}
	t.Logf("debian minbase root, %d paths in the lower; seconds per step:\n%s", len(lowerTree), tm.table())

	kern, ours := results[kindKernel], results[kindUnionmount]
	for _, kind := range []overlayKind{kindKernel, kindUnionmount} {
		for step, want := range debianWant {
			if got := results[kind].outputs[step]; got != want {
				t.Errorf("%s: %s: got:\n%s\nwant:\n%s", kind, step, got, want)
			}
		}
	}
	reportDiff(t, "the lower was written to", diffFingerprints(lowerBefore, fingerprint(t, lower)))
	if t.Failed() {
		return
	}

	// Against the kernel's run of the same session. What differs between
	// any two runs (checked with E2E_SELFTEST_KERNEL=1): apt's downloaded
	// lists and logs, the password hash, caches rebuilt with timestamps.
	opts := diffOpts{freshAfter: start, volatile: debianVolatile}
	compareTrees(t, "merged trees (kernel vs unionmount)", kern.merged, ours.merged, opts)
	reportDiff(t, "directories whose mtime the copy-up kept on one side only", dirMtimeDiffs(lowerTree, kern.merged, ours.merged))
	kept := 0
	for p, r := range rawUpper(t, ours.upper) {
		if l, ok := lowerTree[p]; ok && r.Type == "dir" && l.Type == "dir" && ours.merged[p].Mtime.Equal(l.Mtime) {
			kept++
		}
	}
	t.Logf("unionmount copied up %d directories of the lower that kept their mtime (only parents of changes)", kept)
	if kept == 0 {
		t.Errorf("no directory was copied up with its mtime kept: the mtime check checked nothing")
	}

	// Programs open files for writing and leave them as they were (lock
	// files, apt's lists fetched again, debconf's database): those are
	// copied up without a change, on the kernel too. Only what unionmount
	// does beyond the kernel counts.
	kernNoise := map[string]bool{}
	for _, l := range upperChanges(t, lowerTree, kern.merged, kern.upper) {
		kernNoise[l] = true
	}
	var extra []string
	for _, l := range upperChanges(t, lowerTree, ours.merged, ours.upper) {
		if !kernNoise[l] {
			extra = append(extra, l)
		}
	}
	reportDiff(t, "unionmount's upper vs the session's changes (beyond the kernel's)", extra)
	reportDiff(t, "uppers on disk (kernel vs unionmount)",
		diffUppers("kernel", rawUpper(t, kern.upper), "unionmount", rawUpper(t, ours.upper), &stack{lowers: []string{lower}}))

	after := mountKernel(t, []string{lower}, ours.upper, ours.work, crossKernelOpts(nil)...)
	reportDiff(t, "unionmount's merged tree vs kernel overlayfs over its layers after unmount",
		diffTrees("unionmount", ours.merged, "kernel-remount", snapshot(t, after), diffOpts{}))
	unmount(t, after)
}

// debianVolatile names the paths whose contents differ between two runs of
// debianSteps on any filesystem.
func debianVolatile(p string) bool {
	for _, prefix := range []string{"var/lib/apt/lists/", "var/log/", "var/cache/", "var/lib/dpkg/", "var/cache/debconf/"} {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	switch p {
	case "etc/shadow", "etc/shadow-", "etc/ld.so.cache":
		return true
	}
	return false
}

// dirMtimeDiffs lists directories that exist in the lower where one run
// kept the lower's mtime and the other did not: a copy-up of a directory
// (made as the parent of a change) must keep its mtime, as kernel
// overlayfs does, while one whose entries changed gets a new one on both.
func dirMtimeDiffs(lower, kern, ours Tree) []string {
	var out []string
	for _, p := range sortedKeys(lower) {
		l, k, o := lower[p], kern[p], ours[p]
		if l.Type != "dir" || k.Type != "dir" || o.Type != "dir" {
			continue
		}
		kKept, oKept := k.Mtime.Equal(l.Mtime), o.Mtime.Equal(l.Mtime)
		if kKept != oKept {
			out = append(out, p+": lower "+fmtTime(l.Mtime)+", kernel "+fmtTime(k.Mtime)+", unionmount "+fmtTime(o.Mtime))
		}
	}
	return out
}

// chrootBash runs script with bash (set -eu) chrooted into root, in the
// environment of a non-interactive administrator's shell.
func chrootBash(root, script string) (string, error) {
	return chrootShell(root, "/bin/bash", "set -eu\n"+script,
		[]string{"DEBIAN_FRONTEND=noninteractive", "TERM=dumb"})
}
