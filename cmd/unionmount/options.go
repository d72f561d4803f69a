package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/unionmount/unionmount/fusefs"
	"github.com/unionmount/unionmount/union"
)

// mountConfig is everything the command line says about one mount.
type mountConfig struct {
	union      union.Config
	readOnly   bool
	foreground bool
	debug      bool
	fsName     string
	timeout    time.Duration
	maxEntries int
	// noPassthrough: passthrough=off (the kernel reads and writes upper
	// files through the daemon, as on a rootless mount).
	noPassthrough bool
	mountpoint    string
	// redirectSet: redirect_dir was given explicitly.
	redirectSet bool
	// remount: change the flags of the live mount at mountpoint (mount(8)'s
	// -o remount) instead of mounting. rwSet: ro or rw was given.
	remount, rwSet bool
	// nfsExport: nfs_export=on (file handles; see fusefs.Options).
	nfsExport bool
	// mountFlags are the generic options that become mount flags (dev,
	// nosuid, ...), in the order given.
	mountFlags []string
}

func defaultConfig() mountConfig {
	return mountConfig{
		union:      union.Config{RedirectDir: true, WhiteoutFiles: true},
		timeout:    30 * time.Second,
		maxEntries: fusefs.DefaultMaxEntries,
	}
}

// option is one row of the option table: the single list of what -o
// accepts. The usage text is generated from it, and a test holds the README
// and the man page to the same set.
type option struct {
	name string // the key before '='
	// aliases are more keys the row takes, listed beside name.
	aliases []string
	// arg names the value in the usage text ("on|off", "SECONDS"); empty
	// for an option that takes no value.
	arg string
	// help is the usage text, lines after the first indented by the
	// generator; empty for options accepted and not documented one by one
	// (mount(8)'s generic options).
	help string
	// set applies the option given as key (name or an alias) to c; val is
	// "" for options without '='.
	set func(c *mountConfig, key, val string) error
}

// options is the option table. Order is the usage text's order.
var options = []option{
	{name: "lowerdir", arg: "L1:L2", help: "read-only layers, topmost first (required); a\nbackslash escapes a colon or a comma",
		set: func(c *mountConfig, _, val string) error {
			lowers := splitLowers(val)
			for _, l := range lowers {
				if l == "" {
					return fmt.Errorf("option lowerdir=%q: empty layer", val)
				}
			}
			c.union.Lowers = lowers
			return nil
		}},
	{name: "upperdir", arg: "U", help: "writable layer",
		set: func(c *mountConfig, _, val string) error { c.union.Upper = unescape(val); return nil }},
	{name: "workdir", arg: "W", help: "work directory on U's filesystem (required with upperdir)",
		set: func(c *mountConfig, _, val string) error { c.union.Work = unescape(val); return nil }},
	{name: "redirect_dir", arg: "on|off", help: "rename of lower directories (default on; off: EXDEV)",
		set: func(c *mountConfig, _, val string) error {
			switch val {
			case "on":
				c.union.RedirectDir = true
			case "off", "follow", "nofollow":
				c.union.RedirectDir = false
			default:
				return fmt.Errorf("option redirect_dir=%q: want on or off", val)
			}
			c.redirectSet = true
			return nil
		}},
	{name: "userxattr", help: "keep metadata in user.overlay.* (default when not root;\nthen redirect_dir defaults to off, as the kernel\nfollows no redirect with userxattr)",
		set: func(c *mountConfig, _, _ string) error { c.union.UserXattr = true; return nil }},
	{name: "whiteout_files", arg: "on|off", help: "read .wh.NAME whiteouts in lowers (default on)",
		set: onOffOption("whiteout_files", func(c *mountConfig, on bool) { c.union.WhiteoutFiles = on })},
	{name: "metacopy", arg: "on|off", help: "chmod/chown/utimes/xattrs of lower files copy no data\n(default off, as the kernel: other readers of the upper\nneed metacopy=on)",
		set: onOffOption("metacopy", func(c *mountConfig, on bool) { c.union.MetaCopy = on })},
	{name: "volatile", help: "do not fsync copied-up data (as fsync=0)",
		set: func(c *mountConfig, _, _ string) error { c.union.NoFsync = true; return nil }},
	{name: "fsync", arg: "0|1", help: "0: do not fsync copied-up data (default 1)",
		set: func(c *mountConfig, _, val string) error {
			switch val {
			case "0":
				c.union.NoFsync = true
			case "1":
				c.union.NoFsync = false
			default:
				return fmt.Errorf("option fsync=%q: want 0 or 1", val)
			}
			return nil
		}},
	{name: "timeout", arg: "SECONDS", help: "kernel cache time for entries and attributes (default 30;\nat most a year)",
		set: func(c *mountConfig, _, val string) error {
			// NaN, infinities, -0 and what overflows a time.Duration are
			// no number of seconds (ParseFloat takes them all).
			secs, err := strconv.ParseFloat(val, 64)
			if err != nil || math.IsNaN(secs) || math.Signbit(secs) || secs > maxTimeout.Seconds() {
				return fmt.Errorf("option timeout=%q: want seconds, from 0 to %.0f", val, maxTimeout.Seconds())
			}
			c.timeout = time.Duration(secs * float64(time.Second))
			return nil
		}},
	{name: "max_entries", arg: "N", help: "files the kernel (and the daemon) keep cached; past it\nthe oldest unused are dropped (default 150000; 0: no limit)",
		set: func(c *mountConfig, _, val string) error {
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return fmt.Errorf("option max_entries=%q: want a number of entries (0: no limit)", val)
			}
			c.maxEntries = n
			return nil
		}},
	{name: "passthrough", arg: "on|off", help: "the kernel reads and writes upper files itself (FUSE\npassthrough; default on where the kernel allows it: as\nroot, Linux 6.9 or later; off: every read and write goes\nthrough the daemon, as on a rootless mount)",
		set: onOffOption("passthrough", func(c *mountConfig, on bool) { c.noPassthrough = !on })},
	{name: "nfs_export", arg: "on|off", help: "file handles (name_to_handle_at, open_by_handle_at, NFS\nexport) that last across copy-ups and remounts, as kernel\noverlayfs's nfs_export=on (default off: EOPNOTSUPP, as\nthe kernel's default)",
		set: onOffOption("nfs_export", func(c *mountConfig, on bool) { c.nfsExport = on })},
	{name: "ro", aliases: []string{"rw"}, help: "read-only mount (rw: read-write, the default); an upperdir\nis shown as the topmost lower",
		set: func(c *mountConfig, key, _ string) error { c.readOnly, c.rwSet = key == "ro", true; return nil }},
	{name: "remount", help: "change the live mount at MOUNTPOINT (mount -o remount,ro\nor remount,rw, with dev, suid, exec and their no*)\ninstead of mounting; the daemon keeps serving",
		set: func(c *mountConfig, _, _ string) error { c.remount = true; return nil }},
	{name: "fsname", arg: "NAME", help: "the source shown in /proc/mounts",
		set: func(c *mountConfig, _, val string) error { c.fsName = val; return nil }},
	{name: "dev", aliases: []string{"nodev", "suid", "nosuid", "exec", "noexec"},
		help: "as mount(8); as root the default is dev,suid, for other\nusers fusermount3 imposes nodev,nosuid",
		set: func(c *mountConfig, key, _ string) error {
			c.mountFlags = append(c.mountFlags, key)
			return nil
		}},
	{name: "relatime", aliases: []string{"noatime", "nodiratime", "diratime", "atime", "strictatime", "norelatime"},
		help: "access times of objects in upper, as on kernel overlayfs:\nnoatime: reads never update them; nodiratime: those of\ndirectories; otherwise (default) as the upper filesystem's\nrule (strictatime and norelatime too); lower: never",
		set: func(c *mountConfig, key, _ string) error {
			switch key {
			case "noatime":
				c.union.NoAtime = true
			case "nodiratime":
				c.union.NoDirAtime = true
			case "diratime":
				c.union.NoDirAtime = false
			default:
				c.union.NoAtime = false
			}
			return nil
		}},
	// fuse-overlayfs's id mapping: refused, not ignored.
	{name: "uidmapping", aliases: []string{"gidmapping", "squash_to_root", "squash_to_uid", "squash_to_gid"},
		set: func(_ *mountConfig, key, _ string) error {
			return fmt.Errorf("option %s: id mapping is not supported", key)
		}},
}

// ignoredOptions are accepted and have no effect: mount(8)'s generic
// options, which FUSE or mount itself handles, kernel overlayfs tuning that
// has no meaning here, and fuse-overlayfs's. Options beginning with "x-" are
// accepted too.
var ignoredOptions = []string{
	"lazytime", "nolazytime",
	"sync", "async", "dirsync", "defaults",
	"auto", "noauto", "user", "nouser", "users", "owner", "group", "nofail", "_netdev",
	"allow_other", "allow_root", "default_permissions", "auto_unmount", "silent", "loud",
	"comment", "context", "subtype", "max_read",
	// the FUSE kernel's own, which mount(8) passes back on a remount
	"user_id", "group_id", "rootmode", "blksize",
	// kernel overlayfs features we have or don't need
	"index", "xino", "uuid",
	// fuse-overlayfs
	"noacl", "threaded", "static_nlink",
}

// optionByName indexes options (names and aliases) and ignoredOptions.
var optionByName = func() map[string]*option {
	m := make(map[string]*option)
	for i := range options {
		for _, k := range append([]string{options[i].name}, options[i].aliases...) {
			m[k] = &options[i]
		}
	}
	ignored := &option{set: func(*mountConfig, string, string) error { return nil }}
	for _, name := range ignoredOptions {
		m[name] = ignored
	}
	return m
}()

// onOffOption is a setter for an on|off option.
func onOffOption(name string, apply func(c *mountConfig, on bool)) func(*mountConfig, string, string) error {
	return func(c *mountConfig, _, val string) error {
		switch val {
		case "on":
			apply(c, true)
		case "off":
			apply(c, false)
		default:
			return fmt.Errorf("option %s=%q: want on or off", name, val)
		}
		return nil
	}
}

// maxTimeout is the longest timeout= (a year: the kernel keeps entries
// that long; more gains nothing and nears time.Duration's limit).
const maxTimeout = 365 * 24 * time.Hour

// parseOptions applies a comma-separated -o string to c. A backslash
// escapes a comma (and, in lowerdir, a colon), as for kernel overlayfs.
func parseOptions(s string, c *mountConfig) error {
	for _, opt := range splitOptions(s) {
		if opt == "" {
			continue // podman sends "a,,b"
		}
		key, val, hasVal := strings.Cut(opt, "=")
		o := optionByName[key]
		if o == nil && strings.HasPrefix(key, "x-") {
			continue
		}
		if o == nil {
			return fmt.Errorf("unknown option %q", opt)
		}
		// Rows without help (refused, ignored) take what they are given.
		if o.help != "" && o.arg == "" && hasVal {
			return fmt.Errorf("option %s takes no value (got %q)", key, opt)
		}
		if o.help != "" && o.arg != "" && !hasVal {
			return fmt.Errorf("option %s needs a value: %s=%s", key, key, o.arg)
		}
		if err := o.set(c, key, val); err != nil {
			return err
		}
	}
	return nil
}

// optionsUsage is the -o part of the usage text, from the option table.
func optionsUsage() string {
	var b strings.Builder
	for _, o := range options {
		if o.help == "" {
			continue
		}
		head := strings.Join(append([]string{o.name}, o.aliases...), ", ")
		if o.arg != "" {
			head += "=" + o.arg
		}
		lines := strings.Split(o.help, "\n")
		if len(head) > 16 {
			fmt.Fprintf(&b, "       %s\n", head)
			head = ""
		}
		for _, l := range lines {
			fmt.Fprintf(&b, "       %-16s %s\n", head, l)
			head = ""
		}
	}
	b.WriteString("       mount(8)'s other generic options (rw, sync, x-*, ...) are accepted\n")
	return b.String()
}

// splitOptions splits an -o string at commas not escaped by a backslash,
// keeping the backslashes (lowerdir's "\\:" is undone by splitLowers).
func splitOptions(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case ',':
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape drops the backslash before each escaped character of an
// upperdir or workdir value, as the kernel's ovl_unescape.
func unescape(v string) string {
	if !strings.Contains(v, "\\") {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// splitLowers splits a lowerdir value at colons not escaped by a backslash.
func splitLowers(v string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '\\' && i+1 < len(v):
			i++
			cur.WriteByte(v[i])
		case v[i] == ':':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(v[i])
		}
	}
	return append(out, cur.String())
}

// usage is printed by -h.
func usage() string {
	return `usage: unionmount [-f] [-d] -o lowerdir=L1[:L2...][,upperdir=U,workdir=W][,OPTS] MOUNTPOINT
       unionmount SOURCE MOUNTPOINT -o OPTS      (the form mount.fuse3 uses)

Layers lowerdir (read-only, topmost first) under upperdir (writable) at
MOUNTPOINT. Without upperdir the union is read-only.

  -f           stay in the foreground
  -d           debug: log every request (implies -f)
  -o OPTS      comma-separated options:
` + optionsUsage() + `  -V, --version  print the version

Tools for the layers of a stopped union (same -o options; NAME --help for each):
  unionmount check  -o ... [--repair]   verify (and repair) an upper and workdir
  unionmount diff   -o ... [--json]     list the upper's changes: A/C/D PATH
  unionmount export -o ... [-O FILE]    the upper as an OCI layer tar
  unionmount import -o upperdir=U,... LAYER.tar   an OCI layer tar as a new upper
  unionmount merge  -o ... DEST         the merged view into a new directory
`
}

// parseArgs reads the command line of a mount.
func parseArgs(args []string) (mountConfig, error) {
	c := defaultConfig()
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o":
			if i+1 >= len(args) {
				return c, errors.New("option -o needs an argument")
			}
			i++
			if err := parseOptions(args[i], &c); err != nil {
				return c, err
			}
		case strings.HasPrefix(a, "-o"):
			if err := parseOptions(a[2:], &c); err != nil {
				return c, err
			}
		case a == "-f":
			c.foreground = true
		case a == "-d" || a == "--debug":
			c.debug, c.foreground = true, true
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && a != "-":
			return c, fmt.Errorf("unknown flag %q", a)
		default:
			pos = append(pos, a)
		}
	}
	switch len(pos) {
	case 1:
		c.mountpoint = pos[0]
	case 2:
		if c.fsName == "" {
			c.fsName = pos[0]
		}
		c.mountpoint = pos[1]
	case 0:
		return c, errors.New("missing MOUNTPOINT")
	default:
		return c, fmt.Errorf("too many arguments: %q", pos)
	}
	if c.remount {
		return c, nil // only the flags change; the layers stay as mounted
	}
	if len(c.union.Lowers) == 0 {
		return c, errors.New("option lowerdir is required")
	}
	if c.union.UserXattr || os.Geteuid() != 0 {
		// Kernel overlayfs follows no redirect with userxattr: by
		// default, write none it could not read.
		if !c.redirectSet {
			c.union.RedirectDir = false
		}
	}
	if c.readOnly && c.union.Upper != "" {
		// Read-only with an upper: the upper is shown, as the topmost lower.
		c.union.Lowers = append([]string{c.union.Upper}, c.union.Lowers...)
		c.union.Upper, c.union.Work = "", ""
	}
	return c, nil
}
