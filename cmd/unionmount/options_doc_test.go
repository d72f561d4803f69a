package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// documentedOptions is the set of keys the option table documents.
func documentedOptions() []string {
	var names []string
	for _, o := range options {
		if o.help != "" {
			names = append(names, o.name)
			names = append(names, o.aliases...)
		}
	}
	slices.Sort(names)
	return names
}

// section returns the lines of text from the first line equal to start up
// to (not including) the next line with prefix next.
func section(t *testing.T, text, start, next string) []string {
	t.Helper()
	lines := strings.Split(text, "\n")
	i := slices.Index(lines, start)
	if i < 0 {
		t.Fatalf("no line %q", start)
	}
	var out []string
	for _, l := range lines[i+1:] {
		if strings.HasPrefix(l, next) {
			break
		}
		out = append(out, l)
	}
	return out
}

var backticked = regexp.MustCompile("`([a-z_]+)[^`]*`")

// TestOptionsREADME: the README's option table lists exactly the options
// the option table documents (its first column, one or more `key...`).
func TestOptionsREADME(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range section(t, string(b), "### Options", "#") {
		cols := strings.Split(l, " | ")
		if !strings.HasPrefix(l, "| `") || len(cols) < 2 {
			continue
		}
		for _, m := range backticked.FindAllStringSubmatch(cols[0], -1) {
			got = append(got, m[1])
		}
	}
	slices.Sort(got)
	if want := documentedOptions(); !slices.Equal(got, want) {
		t.Errorf("README options table lists %q,\noption table documents %q", got, want)
	}
}

// TestOptionsManPage: the man page's OPTIONS section (.TP entries) lists
// exactly the options the option table documents.
func TestOptionsManPage(t *testing.T) {
	b, err := os.ReadFile("../../doc/unionmount.8")
	if err != nil {
		t.Fatal(err)
	}
	lines := section(t, string(b), ".SH OPTIONS", ".SH")
	var got []string
	for i, l := range lines {
		if l != ".TP" || i+1 >= len(lines) {
			continue
		}
		// ".BR redirect_dir=on | off", ".BI upperdir= U ,workdir= W",
		// ".BR volatile \", \" fsync=0": keys are the words before '=',
		// and bare lowercase words before any value.
		fields := strings.FieldsFunc(lines[i+1], func(r rune) bool {
			return r == ' ' || r == ',' || r == '"'
		})
		sawValue := false
		for _, f := range fields[1:] {
			if k, _, ok := strings.Cut(f, "="); ok {
				got = append(got, k)
				sawValue = true
			} else if !sawValue && regexp.MustCompile(`^[a-z_]+$`).MatchString(f) {
				got = append(got, f)
			}
		}
	}
	slices.Sort(got)
	if want := documentedOptions(); !slices.Equal(got, want) {
		t.Errorf("man page OPTIONS lists %q,\noption table documents %q", got, want)
	}
}

// TestOptionsUsage: every documented option appears in the usage text, and
// every key of the table parses (no row is shadowed by another).
func TestOptionsUsage(t *testing.T) {
	u := usage()
	for _, name := range documentedOptions() {
		if !regexp.MustCompile(`(?m)[ ,]` + regexp.QuoteMeta(name) + `\b`).MatchString(u) {
			t.Errorf("usage text lacks %s", name)
		}
	}
	for _, o := range options {
		for _, k := range append([]string{o.name}, o.aliases...) {
			if optionByName[k] != &options[slices.IndexFunc(options, func(x option) bool { return x.name == o.name })] {
				t.Errorf("key %s does not reach its row", k)
			}
		}
	}
}
