package e2e

import (
	"os"
	"syscall"
	"testing"
)

func TestMain(m *testing.M) {
	// Modes of new objects must not depend on the caller's umask.
	syscall.Umask(022)
	os.Exit(runMain(m))
}
