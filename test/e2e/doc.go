// Package e2e holds the end-to-end tests of unionmount: they build the real
// binary, mount it over real directories and drive it from outside, the way a
// user or a container runtime would.
//
// Most tests are differential: the same layers are mounted once with kernel
// overlayfs and once with unionmount, the same operations run on both, and
// the errnos, the merged trees and the upper directories on disk must agree
// (see sameOnBoth in differential_test.go). The remaining tests check what the
// kernel does differently on purpose (see SPEC.md §3 and §5).
//
// Running them needs root, /dev/fuse, fusermount3 (Debian package fuse3)
// and kernel overlayfs:
//
//	sudo go test -count=1 ./test/e2e/
//
// Without those the tests skip, unless CI=true, where they fail. The binary
// is built once, by TestMain, from the repository root. Setting
// E2E_SELFTEST_KERNEL=1 mounts kernel overlayfs in place of unionmount, which
// checks the harness itself against the reference (every differential test
// must then pass). E2E_KEEP_LOGS=1 prints the daemon's log even when a test
// passes.
//
// Known differences from the kernel that the comparisons allow, each where
// it is checked: directory link counts (dirNlinkDiffs), opaque markers that
// hide nothing (diffUppers), the kernel's shared whiteout left in
// workdir/work (checkWorkEmpty), lower directory atimes (checkLowerAtimes),
// and mtimes set by the operations themselves (diffOpts.freshAfter).
package e2e
