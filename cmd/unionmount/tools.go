package main

// The offline tools, run as `unionmount NAME ...` on the layers of a
// stopped union given with a mount's -o options. The work is in package
// layertool; this file parses the command line, draws progress on a
// terminal, and maps outcomes to exit codes: 0 done, 1 failed, 2 bad
// command line (check: 0 clean, 1 problems found or left, 2 could not run).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/layertool"
	"github.com/unionmount/unionmount/union"
)

// subcommands are the tools, by name.
var subcommands = map[string]func(args []string) int{
	"check":  runCheck,
	"diff":   runDiff,
	"export": runExport,
	"import": runImport,
	"merge":  runMerge,
}

// toolUsage is printed by `unionmount NAME -h`, per tool.
var toolUsage = map[string]string{
	"check": `usage: unionmount check -o lowerdir=L1[:L2...],upperdir=U[,workdir=W][,OPTS] [--repair]

Verifies a stopped union's upper (and workdir) against its lowers: leftovers
of a crash in W/work, whiteouts that hide nothing, opaque or redirect xattrs
on the wrong kind of object, redirects that point nowhere, whiteouts in
formats only read in lowers, a stale lock. Never writes a lower.
  --repair   fix what is safe, and say what was done
Exit: 0 clean, 1 problems found (or left after --repair), 2 could not run.
`,
	"diff": `usage: unionmount diff -o lowerdir=L1[:L2...],upperdir=U[,workdir=W][,OPTS] [--json]

Lists the changes the upper makes to the lowers, sorted, one per line:
A PATH (added), C PATH (changed), D PATH (deleted), as podman diff.
  --json     {"changed":[...],"added":[...],"deleted":[...]} instead
`,
	"export": `usage: unionmount export -o lowerdir=L1[:L2...],upperdir=U[,workdir=W][,OPTS] [-O layer.tar]

Writes the upper as an OCI image layer tar (whiteouts as .wh.NAME, opaque
directories as .wh..wh..opq, hard links, xattrs, sparse files), the same
bytes for the same upper. To standard output unless -O is given.
  -O FILE    write to FILE (built under a temporary name, renamed when done)
`,
	"import": `usage: unionmount import -o upperdir=U[,workdir=W][,lowerdir=L1:...][,OPTS] LAYER.tar

Applies an OCI image layer tar (plain, gzip, zstd, bzip2 or xz; - for
standard input) to U, which must be missing or empty, in overlay format.
U appears complete or not at all.
`,
	"merge": `usage: unionmount merge -o lowerdir=L1[:L2...][,upperdir=U,workdir=W][,OPTS] DEST

Writes the merged view into the new directory DEST (missing or empty),
keeping hard links, xattrs, sparse files and special files. DEST appears
complete or not at all.
`,
}

const toolCommonUsage = `Common flags:
  -o OPTS      the mount's options (see unionmount --help); repeatable
  --progress   always show the progress bar; -q, --quiet: never
               (default: on a terminal, once a run lasts a second)
`

// toolFlags is what every tool's command line has.
type toolFlags struct {
	name     string
	fs       *flag.FlagSet
	cfg      mountConfig
	progress bool
	quiet    bool
	args     []string // positional arguments
}

func newToolFlags(name string) *toolFlags {
	t := &toolFlags{name: name, cfg: defaultConfig()}
	t.fs = flag.NewFlagSet(name, flag.ContinueOnError)
	t.fs.SetOutput(io.Discard)
	t.fs.Func("o", "options", func(s string) error { return parseOptions(s, &t.cfg) })
	t.fs.BoolVar(&t.progress, "progress", false, "")
	t.fs.BoolVar(&t.quiet, "q", false, "")
	t.fs.BoolVar(&t.quiet, "quiet", false, "")
	return t
}

// parse reads args; flags may come after positional arguments. A help
// request prints the usage and returns errHelp.
func (t *toolFlags) parse(args []string) error {
	var norm []string
	for _, a := range args {
		if strings.HasPrefix(a, "-o") && len(a) > 2 && a[2] != '=' {
			norm = append(norm, "-o", a[2:]) // -oOPTS, as mount(8) allows
			continue
		}
		norm = append(norm, a)
	}
	var tail []string
	for i, a := range norm {
		if a == "--" {
			norm, tail = norm[:i], norm[i+1:]
			break
		}
	}
	defer func() { t.args = append(t.args, tail...) }()
	for {
		if err := t.fs.Parse(norm); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Print(toolUsage[t.name] + toolCommonUsage)
				return flag.ErrHelp
			}
			return err
		}
		rest := t.fs.Args()
		if len(rest) == 0 {
			return nil
		}
		t.args = append(t.args, rest[0])
		norm = rest[1:]
	}
}

// union is the layers the options name.
func (t *toolFlags) union() union.Config { return t.cfg.union }

// fail prints a one-line error for the tool.
func (t *toolFlags) fail(err error) {
	fmt.Fprintf(os.Stderr, "unionmount %s: %v\n", t.name, err)
}

// usageError prints err and the hint, and returns exit code 2.
func (t *toolFlags) usageError(err error) int {
	fmt.Fprintf(os.Stderr, "unionmount %s: %v\nTry 'unionmount %s --help'.\n", t.name, err, t.name)
	return 2
}

// options returns the tools' options: progress on a terminal (or when
// asked), warnings on stderr.
func (t *toolFlags) options() *layertool.Options {
	o := &layertool.Options{Warnf: func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "unionmount %s: warning: %s\n", t.name, fmt.Sprintf(format, args...))
	}}
	if !t.quiet && (t.progress || isTerminal(os.Stderr)) {
		o.Progress = layertool.NewProgress(os.Stderr, t.name)
		if t.progress {
			o.Progress.Delay = 0
		}
	}
	return o
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// runTool runs a tool's work with a context that SIGINT and SIGTERM cancel, so
// that it cleans up what it had begun before exiting.
func runTool(o *layertool.Options, work func(ctx context.Context) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	o.Progress.Start()
	err := work(ctx)
	if err == nil {
		o.Progress.Finish()
	}
	o.Progress.Stop()
	return err
}

func requireLayers(c union.Config, lower, upper bool) error {
	if lower && len(c.Lowers) == 0 {
		return errors.New("option lowerdir is required")
	}
	if upper && c.Upper == "" {
		return errors.New("option upperdir is required")
	}
	return nil
}

func runCheck(args []string) int {
	t := newToolFlags("check")
	repair := t.fs.Bool("repair", false, "")
	if err := t.parse(args); err != nil {
		return helpOr(err, t)
	}
	if len(t.args) > 0 {
		return t.usageError(fmt.Errorf("unexpected argument %q", t.args[0]))
	}
	if err := requireLayers(t.union(), true, true); err != nil {
		return t.usageError(err)
	}
	n, left := 0, 0
	_, err := layertool.Check(context.Background(), t.union(), layertool.CheckOptions{
		Repair: *repair,
		Report: func(p layertool.Problem) {
			fmt.Println(p)
			n++
			if p.Repaired == "" {
				left++
			}
		},
	})
	if err != nil {
		t.fail(err)
		return 2
	}
	switch {
	case n == 0:
		fmt.Println("unionmount check: clean")
		return 0
	case *repair:
		fmt.Printf("unionmount check: %d problem(s), %d repaired, %d left\n", n, n-left, left)
		if left == 0 {
			return 0
		}
	default:
		fmt.Printf("unionmount check: %d problem(s); --repair fixes the safe ones\n", n)
	}
	return 1
}

func runDiff(args []string) int {
	t := newToolFlags("diff")
	asJSON := t.fs.Bool("json", false, "")
	if err := t.parse(args); err != nil {
		return helpOr(err, t)
	}
	if len(t.args) > 0 {
		return t.usageError(fmt.Errorf("unexpected argument %q", t.args[0]))
	}
	if err := requireLayers(t.union(), true, true); err != nil {
		return t.usageError(err)
	}
	changes, err := layertool.Diff(context.Background(), t.union())
	if err != nil {
		t.fail(err)
		return 1
	}
	if *asJSON {
		// podman diff --format json's shape.
		out := struct {
			Changed []string `json:"changed"`
			Added   []string `json:"added"`
			Deleted []string `json:"deleted"`
		}{[]string{}, []string{}, []string{}}
		for _, c := range changes {
			switch c.Kind {
			case 'C':
				out.Changed = append(out.Changed, c.Path)
			case 'A':
				out.Added = append(out.Added, c.Path)
			case 'D':
				out.Deleted = append(out.Deleted, c.Path)
			}
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			t.fail(err)
			return 1
		}
		return 0
	}
	for _, c := range changes {
		fmt.Println(c)
	}
	return 0
}

func runExport(args []string) int {
	t := newToolFlags("export")
	output := t.fs.String("O", "", "")
	if err := t.parse(args); err != nil {
		return helpOr(err, t)
	}
	if len(t.args) > 0 {
		return t.usageError(fmt.Errorf("unexpected argument %q", t.args[0]))
	}
	if err := requireLayers(t.union(), true, true); err != nil {
		return t.usageError(err)
	}
	o := t.options()
	err := runTool(o, func(ctx context.Context) error {
		if *output == "" {
			if isTerminal(os.Stdout) {
				return errors.New("refusing to write a tar to a terminal: use -O FILE or redirect standard output")
			}
			return layertool.Export(ctx, t.union(), os.Stdout, o)
		}
		return writeAtomically(t.union(), *output, func(w io.Writer) error {
			return layertool.Export(ctx, t.union(), w, o)
		})
	})
	if err != nil {
		t.fail(err)
		return 1
	}
	return 0
}

// writeAtomically writes file p through write, under a temporary name in
// the same directory that is renamed to p only when write succeeded.
func writeAtomically(c union.Config, p string, write func(w io.Writer) error) (err error) {
	if err := layertool.RefuseInsideLayers(c, "-O", p); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("-O %q: %w", p, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	mask := unix.Umask(0)
	unix.Umask(mask)
	if err := f.Chmod(os.FileMode(0o666 &^ mask)); err != nil {
		return fmt.Errorf("-O %q: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("-O %q: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("-O %q: %w", p, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("-O %q: %w", p, err)
	}
	return nil
}

func runImport(args []string) int {
	t := newToolFlags("import")
	if err := t.parse(args); err != nil {
		return helpOr(err, t)
	}
	if err := requireLayers(t.union(), false, true); err != nil {
		return t.usageError(err)
	}
	if len(t.args) != 1 {
		return t.usageError(errors.New("want one LAYER.tar (or - for standard input)"))
	}
	o := t.options()
	err := runTool(o, func(ctx context.Context) error {
		src := t.args[0]
		var r io.Reader = os.Stdin
		size := int64(-1)
		if src != "-" {
			f, err := os.Open(src)
			if err != nil {
				return fmt.Errorf("layer %q: %w", src, errors.Unwrap(err))
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return fmt.Errorf("layer %q: %w", src, err)
			}
			if fi.IsDir() {
				return fmt.Errorf("layer %q: is a directory, not a tar", src)
			}
			r = f
			if fi.Mode().IsRegular() {
				size = fi.Size()
			}
		}
		if o.Progress != nil {
			// Import counts files; the bytes are those of the layer read.
			o.Progress.SetTotal(-1, size)
			r = &progressReader{r, o.Progress}
		}
		return layertool.Import(ctx, t.union(), r, o)
	})
	if err != nil {
		t.fail(err)
		return 1
	}
	return 0
}

// progressReader counts what is read from a layer file.
type progressReader struct {
	r io.Reader
	p *layertool.Progress
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.p.Add(0, int64(n))
	return n, err
}

func runMerge(args []string) int {
	t := newToolFlags("merge")
	if err := t.parse(args); err != nil {
		return helpOr(err, t)
	}
	if err := requireLayers(t.union(), true, false); err != nil {
		return t.usageError(err)
	}
	if len(t.args) != 1 {
		return t.usageError(errors.New("want one DEST directory"))
	}
	o := t.options()
	err := runTool(o, func(ctx context.Context) error {
		return layertool.Merge(ctx, t.union(), t.args[0], o)
	})
	if err != nil {
		t.fail(err)
		return 1
	}
	return 0
}

// helpOr is the exit code after a failed parse: 0 for -h, else 2.
func helpOr(err error, t *toolFlags) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return t.usageError(err)
}
