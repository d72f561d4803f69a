package e2e

// A lower on a network filesystem, as in the seeds' NFS-root cluster. This
// kernel has no NFS client, so the lower is sshfs over the loopback, served
// by an sshd of the test's own (127.0.0.1 only, keys made by the test).

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/testreq"
	"golang.org/x/sys/unix"
)

// sshServer is an sshd serving SFTP on 127.0.0.1 to one key.
type sshServer struct {
	dir  string // keys, config
	port int
	cmd  *exec.Cmd
}

// newSSHServer makes a host key, a user key allowed to log in as root, and
// a configuration in a fresh directory, and starts the server.
func newSSHServer(t *testing.T) *sshServer {
	t.Helper()
	s := &sshServer{dir: t.TempDir(), port: freePort(t)}
	for _, key := range []string{"host_key", "user_key"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(s.dir, key)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(s.dir, "user_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s/host_key
AuthorizedKeysFile %s/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
Subsystem sftp internal-sftp
`, s.port, s.dir, s.dir)
	if err := os.WriteFile(filepath.Join(s.dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd's privilege separation directory (made by its service, which
	// does not run here).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s
}

// start runs sshd in the foreground and waits until it says it listens.
func (s *sshServer) start(t *testing.T) {
	t.Helper()
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
	}
	s.cmd = exec.Command(sshd, "-D", "-e", "-f", filepath.Join(s.dir, "sshd_config"))
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("sshd: %v", err)
	}
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "Server listening on 127.0.0.1 port "+strconv.Itoa(s.port)) {
			go func() {
				for lines.Scan() { // keep reading: sshd must not block on its log
				}
			}()
			return
		}
	}
	_ = s.cmd.Wait()
	t.Fatalf("sshd ended before listening: %v", lines.Err())
}

// stop kills sshd and the processes serving its connections (its
// children, each in a session of its own), and waits for sshd.
func (s *sshServer) stop(t *testing.T) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	for _, pid := range descendants(s.cmd.Process.Pid) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// descendants lists the processes below pid (children first).
func descendants(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 {
			if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
				parent[p], _ = strconv.Atoi(f[1])
			}
		}
	}
	var out []int
	var walk func(int)
	walk = func(of int) {
		for p, pp := range parent {
			if pp == of {
				out = append(out, p)
				walk(p)
			}
		}
	}
	walk(pid)
	return out
}

// mountSSHFS mounts remote (a directory served by s) at a fresh mount
// point with sshfs, which reconnects when the server is back, and registers
// the mount with the harness.
func mountSSHFS(t *testing.T, s *sshServer, remote string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "sshfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := strings.Join([]string{
		"IdentityFile=" + filepath.Join(s.dir, "user_key"), "IdentitiesOnly=yes", "BatchMode=yes",
		"StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "port=" + strconv.Itoa(s.port),
		"reconnect", "dir_cache=no",
	}, ",")
	cmd := exec.Command("sshfs", "-F", "/dev/null", "-o", opts, "root@127.0.0.1:"+remote, mnt)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sshfs -o %s: %v\n%s", opts, err, out)
	}
	if typ := fsType(mnt); typ != "fuse.sshfs" {
		t.Fatalf("sshfs returned but %s is %q", mnt, typ)
	}
	prog, _ := exec.LookPath("sshfs")
	register(t, &mountHandle{dir: mnt, kind: "sshfs", pid: findProcess(prog, mnt)})
	return mnt
}

// TestLowerOnSSHFS: a union whose lower is sshfs. The core operations work
// and land in upper; a remount shows the same; while the lower's server is
// gone, what needs the lower fails with EIO (sshfs's answer) and nothing is
// half-written in the upper; once the server is back, all works again.
func TestLowerOnSSHFS(t *testing.T) {
	requireMountable(t)
	testreq.Program(t, "sshfs", "sshfs")
	testreq.Program(t, "ssh-keygen", "openssh-client")
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		testreq.SkipOrFail(t, "sshd is missing (Debian package openssh-server; scripts/deps.sh installs it)")
	}
	if selftestKernel {
		t.Skip("E2E_SELFTEST_KERNEL: about unionmount's lower")
	}
	parallelUnlessTiming(t)
	dir := t.TempDir()
	remote := filepath.Join(dir, "remote")
	makeLayer(t, remote, File("f", "hello\n"), File("gone", "gone\n"), File("cold", "cold\n"),
		File("cold2", "cold2\n"), File("d/inner", "inner\n"))
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	server := newSSHServer(t)
	lower := mountSSHFS(t, server, remote)
	remoteBefore := fingerprint(t, remote)

	session := func(mnt, script string) (string, error) {
		sh := exec.Command("sh", "-c", script)
		sh.Dir = mnt
		out, err := sh.CombinedOutput()
		return string(out), err
	}
	mnt := mountUnion(t, []string{lower}, upper, work)
	out, err := session(mnt, `set -e; cat f; echo x >> f; rm gone; mkdir d/new; echo n > d/new/n
mv d/inner d/moved; chmod 600 f; ls d; stat -c %a f; ls`)
	if want := "hello\nmoved\nnew\n600\ncold\ncold2\nd\nf\n"; err != nil || out != want {
		t.Errorf("core operations over the sshfs lower: %v\n%s\nwant:\n%s", err, out, want)
	}
	if got := readString(t, filepath.Join(upper, "f")); got != "hello\nx\n" {
		t.Errorf("upper f = %q", got)
	}
	if got := readString(t, filepath.Join(upper, "d/moved")); got != "inner\n" {
		t.Errorf("upper d/moved = %q", got)
	}

	unmount(t, mnt)
	mnt = mountUnion(t, []string{lower}, upper, work)
	if out, err := session(mnt, `set -e; cat f; ls; ls d; cat d/new/n`); err != nil || out != "hello\nx\ncold\ncold2\nd\nf\nmoved\nnew\nn\n" {
		t.Errorf("after a remount: %v\n%s", err, out)
	}

	// The server goes away: files not read yet cannot be read or copied up.
	server.stop(t)
	upperBefore := fingerprint(t, upper, work)
	for _, script := range []string{"cat cold", "echo more >> cold2", "chmod 600 cold2"} {
		out, err := session(mnt, script)
		if err == nil || !strings.Contains(out, "Input/output error") {
			t.Errorf("%q with the lower's server gone: %v, %q; want EIO", script, err, out)
		}
	}
	reportDiff(t, "upper and workdir changed by operations that failed", diffFingerprints(upperBefore, fingerprint(t, upper, work)))
	if ents, err := os.ReadDir(filepath.Join(work, "work")); err != nil || len(ents) != 0 {
		t.Errorf("workdir/work after failed copy-ups: %v, %d entries", err, len(ents))
	}

	// It comes back: sshfs reconnects, and so all works again.
	server.start(t)
	if out, err := session(mnt, `set -e; cat cold; echo more >> cold2; cat cold2; cat f`); err != nil || out != "cold\ncold2\nmore\nhello\nx\n" {
		t.Errorf("with the server back: %v\n%s", err, out)
	}
	if got := readString(t, filepath.Join(upper, "cold2")); got != "cold2\nmore\n" {
		t.Errorf("upper cold2 = %q", got)
	}
	reportDiff(t, "the remote lower was written to", diffFingerprints(remoteBefore, fingerprint(t, remote)))
	if log := readLog(daemonOf(t, mnt).logPath); strings.Contains(log, "panic") {
		t.Errorf("daemon log:\n%s", log)
	}
}
