// Package testreq is the one place where a test says that this machine
// lacks something it needs (root, FUSE, a program). Under CI (CI=true) a
// missing requirement fails the test, so that CI cannot go green by running
// nothing; on a user's machine the test is skipped with the reason.
package testreq

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// SkipOrFail stops t because of why: a failure with CI=true, else a skip.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true, so this is a failure, not a skip)", why)
	}
	t.Skip(why)
}

// Root stops t (SkipOrFail) unless it runs as root; what says what needs it.
func Root(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, what+" need root")
	}
}

// Program stops t (SkipOrFail) unless prog is on PATH; pkg names the
// Debian package that has it (scripts/deps.sh installs it).
func Program(t testing.TB, prog, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(prog); err != nil {
		SkipOrFail(t, fmt.Sprintf("%s is missing (Debian package %s; scripts/deps.sh installs it)", prog, pkg))
	}
}
