// Package e2e holds the end-to-end tests of unionmount: they build the real
// binary, mount it over real directories and drive it from outside, the way a
// user or a container runtime would.
//
// Most tests are differential: the same layers are mounted once with kernel
// overlayfs and once with unionmount, the same operations run on both, and
// the errnos, the merged trees and the upper directories on disk must agree
// (see sameOnBoth in harness_compare.go). The remaining tests check what the
// kernel does differently on purpose (see SPEC.md §3 and §5).
//
// Files named harness*.go hold the harness and no test; *_test.go files hold
// tests. The harness's parts:
//
//   - harness.go: the binary, the requirements (requireMountable,
//     skipOrFail: with CI=true a missing requirement fails, elsewhere it
//     skips), and the one way daemons start (launch: mountDetached as users
//     and Podman run it, startDaemon in the foreground); mountUnion,
//     mountKernel, unmount.
//   - harness_layers.go: layers built from entries (File, Dir, Whiteout...).
//   - harness_snapshot.go: a merged tree as data, and diffs of trees.
//   - harness_compare.go: the differential engine (pair: one stack built
//     twice, kernel overlayfs on one side, unionmount on the other), its
//     runner for hand-written cases (sameOnBoth) and their operations;
//     harness_checks.go: checks of an upper.
//   - harness_difftest_*.go: the generated-sequence tester (gen, run on the
//     same pair plus ext4, shrink).
//   - harness_reliability.go, harness_model.go: foreground daemons, scratch
//     filesystems, the crash model; harness_overlays.go: kernel overlayfs,
//     unionmount and fuse-overlayfs side by side; harness_tools.go: the
//     layer tools; harness_dirents.go: raw getdents.
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
