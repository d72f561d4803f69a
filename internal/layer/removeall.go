package layer

import (
	"errors"

	"golang.org/x/sys/unix"
)

// RemoveAll removes rel and everything under it, inside the layer. A
// missing rel is no error.
func (l *Layer) RemoveAll(rel string) error {
	err := l.Unlink(rel)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	ents, err := l.ReadDir(rel)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := l.RemoveAll(Join(rel, e.Name)); err != nil {
			return err
		}
	}
	return l.Rmdir(rel)
}
