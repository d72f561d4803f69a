package layer

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Dirent is one entry of a real directory, as getdents64 reports it.
type Dirent struct {
	Name string
	Ino  uint64
	Type uint8 // DT_* constant
}

// ReadDir lists directory rel (without "." and ".."), leaving its access
// time alone.
func (l *Layer) ReadDir(rel string) ([]Dirent, error) {
	return l.readDir(rel, unix.O_NOATIME)
}

// ReadDirAccess lists directory rel as a reader does: its access time is
// updated as the options of the layer's mount say.
func (l *Layer) ReadDirAccess(rel string) ([]Dirent, error) {
	return l.readDir(rel, 0)
}

func (l *Layer) readDir(rel string, flags int) ([]Dirent, error) {
	fd, err := l.Open(rel, unix.O_RDONLY|unix.O_DIRECTORY|flags, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return ReadDirFD(fd)
}

// ReadDirFD lists the open directory fd from its current offset.
func ReadDirFD(fd int) ([]Dirent, error) {
	var out []Dirent
	buf := make([]byte, 32*1024)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for off := 0; off < n; {
			d := (*unix.Dirent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+int(unsafe.Offsetof(d.Name)) : off+int(d.Reclen)]
			for i, c := range nameBytes {
				if c == 0 {
					nameBytes = nameBytes[:i]
					break
				}
			}
			off += int(d.Reclen)
			name := string(nameBytes)
			if name == "." || name == ".." {
				continue
			}
			out = append(out, Dirent{Name: name, Ino: d.Ino, Type: d.Type})
		}
	}
}

// DTToMode converts a DT_* type to the S_IFMT bits.
func DTToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	}
	return 0
}
