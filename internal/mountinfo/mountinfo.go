// Package mountinfo answers what is mounted where, from
// /proc/self/mountinfo.
package mountinfo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// FsType returns the filesystem type of the topmost mount at dir ("fuse.unionmount",
// "overlay", ...), or "" if dir is not a mount point. dir must be absolute and clean.
func FsType(dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	typ := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || Unescape(fields[4]) != dir {
			continue
		}
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				typ = fields[i+1] // the last one listed is the top of the stack
				break
			}
		}
	}
	return typ, sc.Err()
}

// Unescape undoes mountinfo's octal escapes (\040 for a space).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
