package main

import (
	"errors"
	"fmt"
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
	mountpoint string
	// redirectSet and metacopySet: the options were given explicitly.
	redirectSet, metacopySet bool
	// mountFlags are the generic options that become mount flags (dev,
	// nosuid, ...), in the order given.
	mountFlags []string
}

func defaultConfig() mountConfig {
	return mountConfig{
		union:      union.Config{RedirectDir: true, WhiteoutFiles: true, MetaCopy: true},
		timeout:    30 * time.Second,
		maxEntries: fusefs.DefaultMaxEntries,
	}
}

// mountFlagOptions are the generic options that set mount flags.
var mountFlagOptions = map[string]bool{
	"dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true, "noexec": true,
}

// ignoredOptions are accepted and have no effect: mount(8)'s generic
// options, which FUSE or mount itself handles, and kernel overlayfs tuning
// that has no meaning here.
var ignoredOptions = map[string]bool{
	"rw": true, "atime": true, "noatime": true,
	"relatime": true, "norelatime": true, "strictatime": true,
	"nodiratime": true, "diratime": true, "lazytime": true, "nolazytime": true,
	"sync": true, "async": true, "dirsync": true, "defaults": true,
	"auto": true, "noauto": true, "user": true, "nouser": true, "users": true,
	"owner": true, "group": true, "nofail": true, "_netdev": true,
	"allow_other": true, "allow_root": true, "default_permissions": true,
	"auto_unmount": true, "silent": true, "loud": true,
	// kernel overlayfs features we have or don't need
	"index": true, "xino": true, "nfs_export": true, "uuid": true,
	// fuse-overlayfs
	"noacl": true, "threaded": true, "static_nlink": true,
}

// parseOptions applies a comma-separated -o string to c.
func parseOptions(s string, c *mountConfig) error {
	for _, opt := range strings.Split(s, ",") {
		if opt == "" {
			continue // podman sends "a,,b"
		}
		key, val, hasVal := strings.Cut(opt, "=")
		switch {
		case key == "lowerdir":
			lowers := splitLowers(val)
			for _, l := range lowers {
				if l == "" {
					return fmt.Errorf("option lowerdir=%q: empty layer", val)
				}
			}
			c.union.Lowers = lowers
		case key == "upperdir":
			c.union.Upper = val
		case key == "workdir":
			c.union.Work = val
		case key == "redirect_dir":
			c.redirectSet = true
			switch val {
			case "on":
				c.union.RedirectDir = true
			case "off", "follow", "nofollow":
				c.union.RedirectDir = false
			default:
				return fmt.Errorf("option redirect_dir=%q: want on or off", val)
			}
		case key == "userxattr" && !hasVal:
			c.union.UserXattr = true
		case key == "metacopy":
			on, err := onOff(key, val)
			if err != nil {
				return err
			}
			c.union.MetaCopy, c.metacopySet = on, true
		case key == "whiteout_files":
			on, err := onOff(key, val)
			if err != nil {
				return err
			}
			c.union.WhiteoutFiles = on
		case key == "volatile" && !hasVal:
			c.union.NoFsync = true
		case key == "fsync":
			switch val {
			case "0":
				c.union.NoFsync = true
			case "1":
				c.union.NoFsync = false
			default:
				return fmt.Errorf("option fsync=%q: want 0 or 1", val)
			}
		case key == "ro" && !hasVal:
			c.readOnly = true
		case !hasVal && mountFlagOptions[key]:
			c.mountFlags = append(c.mountFlags, key)
		case key == "fsname":
			c.fsName = val
		case key == "timeout":
			secs, err := strconv.ParseFloat(val, 64)
			if err != nil || secs < 0 {
				return fmt.Errorf("option timeout=%q: want seconds", val)
			}
			c.timeout = time.Duration(secs * float64(time.Second))
		case key == "max_entries":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return fmt.Errorf("option max_entries=%q: want a number of entries (0: no limit)", val)
			}
			c.maxEntries = n
		case key == "uidmapping" || key == "gidmapping" || strings.HasPrefix(key, "squash_to"):
			return fmt.Errorf("option %s: id mapping is not supported", key)
		case ignoredOptions[key] || strings.HasPrefix(key, "x-") || key == "comment" || key == "context" || key == "subtype" || key == "max_read":
		default:
			return fmt.Errorf("unknown option %q", opt)
		}
	}
	return nil
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

func onOff(key, val string) (bool, error) {
	switch val {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("option %s=%q: want on or off", key, val)
}

// usage is printed by -h.
const usage = `usage: unionmount [-f] [-d] -o lowerdir=L1[:L2...][,upperdir=U,workdir=W][,OPTS] MOUNTPOINT
       unionmount SOURCE MOUNTPOINT -o OPTS      (the form mount.fuse3 uses)

Layers lowerdir (read-only, topmost first) under upperdir (writable) at
MOUNTPOINT. Without upperdir the union is read-only.

  -f           stay in the foreground
  -d           debug: log every request (implies -f)
  -o OPTS      comma-separated options:
       lowerdir=L1:L2   read-only layers, topmost first (required)
       upperdir=U       writable layer
       workdir=W        work directory on U's filesystem (required with upperdir)
       redirect_dir=on|off   rename of lower directories (default on; off: EXDEV)
       userxattr        keep metadata in user.overlay.* (default when not root;
                        then redirect_dir and metacopy default to off, as the
                        kernel reads neither with userxattr)
       whiteout_files=on|off read .wh.NAME whiteouts in lowers (default on)
       metacopy=on|off  chmod/chown/utimes/xattrs of lower files copy no data (default on)
       volatile, fsync=0     do not fsync copied-up data
       timeout=SECONDS  kernel cache time for entries and attributes (default 30)
       max_entries=N    files the kernel (and the daemon) keep cached; past it
                        the oldest unused are dropped (default 150000; 0: no limit)
       dev, nodev, suid, nosuid, exec, noexec   as mount(8) (root: dev,suid
                        by default; others get nodev,nosuid from fusermount3)
       ro, and mount(8)'s other generic options (accepted, no effect)
  -V, --version  print the version

Tools for the layers of a stopped union (same -o options; NAME --help for each):
  unionmount check  -o ... [--repair]   verify (and repair) an upper and workdir
  unionmount diff   -o ... [--json]     list the upper's changes: A/C/D PATH
  unionmount export -o ... [-O FILE]    the upper as an OCI layer tar
  unionmount import -o upperdir=U,... LAYER.tar   an OCI layer tar as a new upper
  unionmount merge  -o ... DEST         the merged view into a new directory
`

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
	if len(c.union.Lowers) == 0 {
		return c, errors.New("option lowerdir is required")
	}
	if c.union.UserXattr || os.Geteuid() != 0 {
		// Kernel overlayfs follows no redirect and no metacopy with
		// userxattr: by default, write none it could not read.
		if !c.redirectSet {
			c.union.RedirectDir = false
		}
		if !c.metacopySet {
			c.union.MetaCopy = false
		}
	}
	if c.readOnly && c.union.Upper != "" {
		// Read-only with an upper: the upper is shown, as the topmost lower.
		c.union.Lowers = append([]string{c.union.Upper}, c.union.Lowers...)
		c.union.Upper, c.union.Work = "", ""
	}
	return c, nil
}
