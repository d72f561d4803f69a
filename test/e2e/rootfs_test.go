package e2e

// A union root filesystem, the seeds' first use case: a read-only root image
// as the lower, a writable upper, /proc and /dev bound into the merged tree,
// and an administrator's session run chrooted inside it. The same session
// runs on kernel overlayfs (the reference), unionmount and fuse-overlayfs
// (for the timings), each over the same lower and a fresh upper.

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// busyboxPath is where Debian's busybox-static puts its binary.
const busyboxPath = "/bin/busybox"

// requireStaticBusybox stops the test unless a statically linked busybox is
// installed (Debian package busybox-static, a CI dependency), since the
// root built from it has no libraries.
func requireStaticBusybox(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(busyboxPath)
	if err == nil && !isStaticELF(b) {
		err = fmt.Errorf("%s is dynamically linked (package busybox, not busybox-static)", busyboxPath)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("need a static busybox (Debian package busybox-static): %v", err)
		}
		t.Skipf("need a static busybox (Debian package busybox-static): %v", err)
	}
	return b
}

// isStaticELF reports whether an ELF image has no PT_INTERP program header,
// i.e. needs no dynamic loader.
func isStaticELF(b []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// busyboxRoot is the lower of the union root: busybox and its applets, an
// /etc with users and config files, a web root, and objects with every kind
// of metadata a copy-up must keep (modes with suid and sticky bits, owners,
// xattrs).
func busyboxRoot(t *testing.T, busybox []byte) []Entry {
	t.Helper()
	out, err := exec.Command(busyboxPath, "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	entries := []Entry{
		Dir("bin"), Dir("sbin"), Dir("usr/bin"), Dir("usr/sbin"),
		File("bin/busybox", string(busybox)).WithMode(0o755),
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "bin/busybox" {
			entries = append(entries, Symlink(applet, "/bin/busybox"))
		}
	}
	return append(entries,
		Dir("proc").WithMode(0o555), Dir("dev"), Dir("sys").WithMode(0o555),
		Dir("tmp").WithMode(0o1777), Dir("root").WithMode(0o700), Dir("home"),
		Dir("var/log"),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"+
			"daemon:x:1:1:daemon:/usr/sbin:/sbin/nologin\n"+
			"www-data:x:33:33:www-data:/var/www:/sbin/nologin\n"),
		File("etc/group", "root:x:0:\ndaemon:x:1:\nshadow:x:42:\nwww-data:x:33:\nusers:x:100:\n"),
		File("etc/shadow", "root:*:19000:0:99999:7:::\n"+
			"daemon:*:19000:0:99999:7:::\n"+
			"www-data:*:19000:0:99999:7:::\n").WithMode(0o640).WithOwner(0, 42),
		File("etc/hostname", "box\n"),
		File("etc/hosts", "127.0.0.1 localhost\n"),
		File("etc/inittab", "::sysinit:/etc/init.d/rcS\n::respawn:/sbin/getty 38400 tty1\n"),
		File("etc/issue", "Union Linux \\n \\l\n"),
		File("etc/motd", "Welcome.\n").WithXattr("user.origin", "image").WithXattr("trusted.label", "motd"),
		File("etc/old.conf", "setting=1\n"),
		File("etc/profile", "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
		// The binary the session deletes: a real executable, run first.
		File("usr/local/bin/busybox-old", string(busybox)).WithMode(0o755),
		File("usr/local/sbin/helper", "#!/bin/sh\nid -u\n").WithMode(0o4755),
		Dir("var/www").WithOwner(33, 33).WithXattr("user.role", "webroot"),
		File("var/www/index.html", "<h1>base image</h1>\n").WithOwner(33, 33),
		File("var/www/old/a.html", "old a\n"),
		File("var/www/old/b.html", "old b\n"),
		File("var/www/images/logo.txt", "[logo]\n").WithMode(0o444),
		Dir("var/www/images/icons"),
		File("var/www/images/icons/star.txt", "*\n"),
		File("opt/app/VERSION", "1\n"),
		File("opt/app/lib/app.so", "\x7fELF fake library\n").WithMode(0o755),
	)
}

// rootfsSession is the administrator's session, run with busybox sh chrooted
// into the merged root. Its output must be the same on every filesystem.
const rootfsSession = `set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
cd /
echo "== run the binary that will be deleted"
busybox-old echo "busybox-old runs"
echo "== add a user"
echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >> /etc/passwd
echo 'alice:x:1000:' >> /etc/group
sed -i 's/^users:x:100:$/users:x:100:alice/' /etc/group
echo 'alice:!:19000:0:99999:7:::' >> /etc/shadow
printf 's3cret\ns3cret\n' | passwd alice >/dev/null 2>&1
grep -c '^alice:\$' /etc/shadow
mkdir /home/alice
chown alice:alice /home/alice
chmod 0750 /home/alice
su -s /bin/sh alice -c 'cd && echo "export EDITOR=vi" > .profile && mkdir bin &&
	printf "#!/bin/sh\necho hello from \$(id -un)\n" > bin/hello && chmod 0755 bin/hello && ./bin/hello'
if su -s /bin/sh alice -c 'touch /etc/alice-was-here' 2>/dev/null; then echo "alice wrote /etc"; exit 1; fi
id alice
/usr/local/sbin/helper
echo "== edit /etc"
sed -i 's/^box$/unionbox/' /etc/hostname
echo '127.0.1.1 unionbox' >> /etc/hosts
chmod 0600 /etc/inittab
touch -t 202001020304.05 /etc/issue
mv /etc/old.conf /etc/new.conf
echo "setting=2" >> /etc/new.conf
chown daemon:daemon /etc/motd
echo "== delete a binary"
rm /usr/local/bin/busybox-old
hash -r
if command -v busybox-old; then echo "busybox-old still there"; exit 1; fi
rm /usr/bin/telnet
echo "== create a service directory"
mkdir -p /etc/service/httpd/log /var/service
printf '#!/bin/sh\nexec httpd -f -p "127.0.0.1:${HTTPD_PORT:-8080}" -h /var/www\n' > /etc/service/httpd/run
chmod 0755 /etc/service/httpd/run
ln -s /etc/service/httpd /var/service/httpd
echo "== web content"
echo '<h1>served from the union</h1>' > /var/www/index.html
mkdir /var/www/docs
echo 'a document' > /var/www/docs/a.txt
rm -r /var/www/old
mv /var/www/images /var/www/img
rm -r /opt/app
mkdir /opt/app
echo 2 > /opt/app/VERSION
echo "== the result"
cat /etc/hostname /etc/group /etc/new.conf
grep -v '^alice:' /etc/shadow
find /etc /home /opt /usr/local /var | sort | xargs stat -c '%n %A %u:%g %s'
`

// TestUnionRootBusybox runs rootfsSession in a busybox root mounted with
// each overlay filesystem, serves a page from busybox httpd inside it, and
// checks: the session's output and the merged tree equal the kernel's; the
// lower is unchanged; the upper holds exactly the session's changes and
// matches the kernel's upper; lower+upper remounted with kernel overlayfs
// after unmounting show what the mount showed.
func TestUnionRootBusybox(t *testing.T) {
	requireMountable(t)
	busybox := requireStaticBusybox(t)
	parallelUnlessTiming(t)

	// Mtimes at or after start are the session's (the lower's are all
	// layerTime); taken first, as file times come from a coarser clock.
	start := time.Now()
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	makeLayer(t, lower, busyboxRoot(t, busybox)...)
	lowerBefore := fingerprint(t, lower)
	lowerTree := snapshot(t, lower)
	port := freePort(t)

	type result struct {
		output string
		merged Tree
		upper  string
		work   string
	}
	results := map[overlayKind]result{}
	var tm timings
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
		var out string
		var err error
		tm.time("admin session", kind, func() { out, err = chrootSh(mnt, rootfsSession, nil) })
		if err != nil {
			t.Fatalf("%s: admin session failed: %v\n%s", kind, err, out)
		}
		tm.time("httpd: start, fetch 3 pages, stop", kind, func() { serveFromRoot(t, kind, mnt, port) })
		unbind(t, filepath.Join(mnt, "dev"))
		unbind(t, filepath.Join(mnt, "proc"))
		var merged Tree
		tm.time("snapshot of the merged tree", kind, func() { merged = snapshot(t, mnt) })
		tm.time("unmount", kind, func() { unmount(t, mnt) })
		results[kind] = result{out, merged, upper, work}
	}
	t.Logf("busybox root, %d paths in the lower; seconds per step:\n%s", len(lowerTree), tm.table())

	kern, ours := results[kindKernel], results[kindUnionmount]
	if ours.output != kern.output {
		t.Errorf("the session's output differs:\n--- kernel overlayfs:\n%s\n--- unionmount:\n%s", kern.output, ours.output)
	}
	// /etc/shadow holds a salted password hash: different on every run.
	opts := diffOpts{freshAfter: start, volatile: func(p string) bool { return p == "etc/shadow" }}
	compareTrees(t, "merged trees (kernel vs unionmount)", kern.merged, ours.merged, opts)
	reportDiff(t, "the lower was written to", diffFingerprints(lowerBefore, fingerprint(t, lower)))

	// The upper: exactly the changes, in the kernel's format.
	reportDiff(t, "unionmount's upper vs the session's changes", upperChanges(t, lowerTree, ours.merged, ours.upper))
	reportDiff(t, "kernel's upper vs the session's changes (checks the check)", upperChanges(t, lowerTree, kern.merged, kern.upper))
	lowerStack := &stack{lowers: []string{lower}}
	reportDiff(t, "uppers on disk (kernel vs unionmount)",
		diffUppers("kernel", rawUpper(t, kern.upper), "unionmount", rawUpper(t, ours.upper), lowerStack))
	kernUpper, ourUpper := upperContents(t, kern.upper), upperContents(t, ours.upper)
	alignMetacopies(kernUpper, ourUpper)
	reportDiff(t, "contents of the uppers on disk (kernel vs unionmount)", diffTrees("kernel", kernUpper, "unionmount", ourUpper, opts))
	raw := rawUpper(t, ours.upper)
	for _, p := range []string{"usr/local/bin/busybox-old", "usr/bin/telnet", "etc/old.conf", "var/www/old", "var/www/images"} {
		if !raw[p].Whiteout {
			t.Errorf("upper %s: want a whiteout, got %+v", p, raw[p])
		}
	}
	if raw["opt/app"].Opaque != "y" {
		t.Errorf("upper opt/app (removed and made again): want opaque, got %+v", raw["opt/app"])
	}
	if raw["var/www/img"].Redirect == "" {
		t.Errorf("upper var/www/img (renamed lower directory): want a redirect, got %+v", raw["var/www/img"])
	}

	// What the mount showed is what lower+upper on disk hold (metacopy=on:
	// unionmount copies metadata-only changes without their data).
	after := mountKernel(t, []string{lower}, ours.upper, ours.work, crossKernelOpts(nil)...)
	reportDiff(t, "unionmount's merged tree vs kernel overlayfs over its layers after unmount",
		diffTrees("unionmount", ours.merged, "kernel-remount", snapshot(t, after), diffOpts{}))
	unmount(t, after)
}

// chrootSh runs script with /bin/sh chrooted into root, with env added to a
// minimal environment, and returns its combined output.
func chrootSh(root, script string, env []string) (string, error) {
	return chrootShell(root, "/bin/sh", script, env)
}

// chrootShell runs script with shell (a path inside root) chrooted into
// root and returns its combined output.
func chrootShell(root, shell, script string, env []string) (string, error) {
	cmd := exec.Command(shell, "-c", script)
	cmd.Dir = "/"
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runWithTimeout(cmd, 5*time.Minute)
	return out.String(), err
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serveFromRoot starts the service the session created (busybox httpd, via
// /etc/service/httpd/run) chrooted into root, waits until it answers, then
// fetches pages from inside the root (busybox wget) and from the host, and
// stops it.
func serveFromRoot(t *testing.T, kind overlayKind, root string, port int) {
	t.Helper()
	var log bytes.Buffer
	cmd := exec.Command("/etc/service/httpd/run")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HTTPD_PORT=" + strconv.Itoa(port)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: starting httpd: %v", kind, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("%s: httpd did not stop on SIGTERM", kind)
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	// Wait for it to listen: poll, bounded.
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s: httpd exited before listening: %v\n%s", kind, err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: httpd not listening on port %d after 15s: %v\n%s", kind, port, err, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := chrootSh(root, "wget -q -O - "+url, nil)
	if err != nil || out != "<h1>served from the union</h1>\n" {
		t.Errorf("%s: wget %s inside the root: %v, got %q", kind, url, err, out)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for page, want := range map[string]string{"docs/a.txt": "a document\n", "img/logo.txt": "[logo]\n"} {
		resp, err := client.Get(url + page)
		if err != nil {
			t.Errorf("%s: GET %s%s from the host: %v", kind, url, page, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("%s: GET %s%s: %s %v, got %q, want %q", kind, url, page, resp.Status, err, body, want)
		}
	}
}
