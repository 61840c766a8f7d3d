package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with (or, as a warning, worth knowing about) a
// configuration.
type Problem struct {
	// Line is the 1-based line of the file the problem is about, 0 when
	// unknown (a Config that did not come from a file, or a default value
	// whose table is not in the file).
	Line int
	// Key is the TOML key with its table path, for example
	// "session_timer.min_se" or "device[1].address" (0-based index); empty
	// for a TOML syntax error.
	Key string
	// Msg says what is wrong, in the operator's terms.
	Msg string
	// Hint says how to fix it; may be empty.
	Hint string
}

// String renders the problem without a file name:
// "line 12: session_timer.min_se: 60 is below ... (hint: ...)".
func (p Problem) String() string { return p.Format("") }

// Format renders the problem as one line, "FILE:LINE: KEY (VOSNAME): MSG
// (hint: HINT)", leaving out what is unknown. The VOS3000 name follows the
// key where there is one.
func (p Problem) Format(file string) string {
	var b strings.Builder
	switch {
	case file != "" && p.Line > 0:
		b.WriteString(file + ":" + strconv.Itoa(p.Line) + ": ")
	case file != "":
		b.WriteString(file + ": ")
	case p.Line > 0:
		b.WriteString("line " + strconv.Itoa(p.Line) + ": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		if vos, ok := VOSName(p.Key); ok {
			b.WriteString(" (" + vos + ")")
		}
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Hint != "" {
		b.WriteString(" (hint: " + p.Hint + ")")
	}
	return b.String()
}

// Problems is the error Parse, Check, Load, Save and Validate return: every
// problem found, in file order. Check also uses it to return warnings.
type Problems struct {
	// File names the file in messages ("" for a Config not from a file).
	File string
	// List holds the problems, sorted by line (problems without a line
	// last), in the order found within a line.
	List []Problem
}

// Error renders one line per problem, joined with newlines.
func (ps *Problems) Error() string {
	lines := make([]string, len(ps.List))
	for i, p := range ps.List {
		lines[i] = p.Format(ps.File)
	}
	return strings.Join(lines, "\n")
}

// issue is a problem under construction: related lists further keys whose
// line can stand for the problem when Key itself is not in the file (a
// rule between two keys, only one of which the operator wrote).
type issue struct {
	Problem
	related []string
}

// collector gathers issues.
type collector struct{ issues []issue }

func (c *collector) add(key, msg, hint string, related ...string) {
	c.issues = append(c.issues, issue{Problem: Problem{Key: key, Msg: msg, Hint: hint}, related: related})
}

// problems turns the issues into sorted problems, each with its line
// from lines (nil: no lines).
func (c *collector) problems(lines keyLines) []Problem {
	if len(c.issues) == 0 {
		return nil
	}
	out := make([]Problem, len(c.issues))
	for i, is := range c.issues {
		out[i] = is.Problem
		if out[i].Line == 0 && lines != nil {
			out[i].Line = lines.find(is.Key, is.related)
		}
	}
	slices.SortStableFunc(out, func(a, b Problem) int {
		// Lines ascending, unknown lines (0) last.
		la, lb := a.Line, b.Line
		if la == 0 {
			la = int(^uint(0) >> 1)
		}
		if lb == 0 {
			lb = int(^uint(0) >> 1)
		}
		return cmp.Compare(la, lb)
	})
	return out
}
