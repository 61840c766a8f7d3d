package config

import (
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Line numbers.
//
// BurntSushi/toml records the position of each key while parsing, but only
// shows it inside its own errors, it keeps one position per key name (the
// elements of an array of tables share one), and it stops at the first
// error. So this file carries its own small scanner: it runs over a
// document that BurntSushi/toml has already accepted and records the line
// of every key, table header and array element under the same path names
// the decoder and Validate use ("device[1].address", "sip.listen[0]"). It
// never fails: on input it does not understand it records less, and a
// problem then falls back to the line of the enclosing table, or none.

// keyLines maps a key path to the 1-based line where it is written.
type keyLines map[string]int

// find returns the line of key, else of the first related key found, else
// of the nearest enclosing table or array written in the file, else 0.
func (kl keyLines) find(key string, related []string) int {
	if n, ok := kl[key]; ok {
		return n
	}
	for _, r := range related {
		if n, ok := kl[r]; ok {
			return n
		}
	}
	for k := parentPath(key); k != ""; k = parentPath(k) {
		if n, ok := kl[k]; ok {
			return n
		}
	}
	return 0
}

// parentPath strips the last element ("a.b[2]" → "a.b" → "a" → "").
func parentPath(k string) string {
	if strings.HasSuffix(k, "]") {
		if i := strings.LastIndexByte(k, '['); i >= 0 {
			return k[:i]
		}
	}
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		return k[:i]
	}
	return ""
}

// joinKey appends a key part, quoted the TOML way when it is not bare.
func joinKey(path, part string) string {
	q := toml.Key{part}.String()
	if path == "" {
		return q
	}
	return path + "." + q
}

// indexKey appends an array index: "sip.listen" → "sip.listen[0]".
func indexKey(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// maxNesting bounds the recursion of the scanner on nested arrays and
// inline tables.
const maxNesting = 200

// locator is the scanner. pos only moves forward.
type locator struct {
	src     string
	pos     int
	nl      []int          // offsets of the '\n' bytes
	lines   keyLines       // the result
	aot     map[string]int // elements seen so far per array of tables
	nesting int
}

// locateKeys scans a TOML document and returns the line of every key path.
func locateKeys(src string) keyLines {
	l := &locator{src: src, lines: keyLines{}, aot: map[string]int{}}
	for i := 0; i < len(src); i++ {
		if src[i] == '\n' {
			l.nl = append(l.nl, i)
		}
	}
	if strings.HasPrefix(src, "\ufeff") { // a byte order mark
		l.pos = len("\ufeff")
	}
	l.document()
	return l.lines
}

// lineAt is the 1-based line of byte offset off.
func (l *locator) lineAt(off int) int { return sort.SearchInts(l.nl, off) + 1 }

// record notes path at offset off, keeping the first line a path was seen
// on, and its enclosing tables too (for "a.b.c = 1" also "a" and "a.b").
func (l *locator) record(path string, off int) {
	if path == "" {
		return
	}
	line := l.lineAt(off)
	for k := path; k != ""; k = parentPath(k) {
		if _, ok := l.lines[k]; ok {
			break
		}
		l.lines[k] = line
	}
}

func (l *locator) eof() bool { return l.pos >= len(l.src) }

func (l *locator) peek(s string) bool { return strings.HasPrefix(l.src[l.pos:], s) }

// skipBlank skips spaces and tabs.
func (l *locator) skipBlank() {
	for !l.eof() && (l.src[l.pos] == ' ' || l.src[l.pos] == '\t') {
		l.pos++
	}
}

// skipSpace skips whitespace, newlines and comments.
func (l *locator) skipSpace() {
	for !l.eof() {
		switch l.src[l.pos] {
		case ' ', '\t', '\r', '\n':
			l.pos++
		case '#':
			l.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to the start of the next line.
func (l *locator) skipLine() {
	if i := strings.IndexByte(l.src[l.pos:], '\n'); i >= 0 {
		l.pos += i + 1
	} else {
		l.pos = len(l.src)
	}
}

// keyValue reads one `dotted.key [= value]` at the current position, below
// the table base, recording the key's line. It reports false when it found
// no key there and did not advance.
func (l *locator) keyValue(base string) bool {
	start := l.pos
	parts := l.keyParts()
	if len(parts) == 0 {
		return false
	}
	key := base
	for _, p := range parts {
		key = joinKey(key, p)
	}
	l.record(key, start)
	l.skipBlank()
	if !l.eof() && l.src[l.pos] == '=' {
		l.pos++
		l.value(key)
	}
	return l.pos != start
}

func (l *locator) document() {
	table := ""
	for {
		l.skipSpace()
		if l.eof() {
			return
		}
		start := l.pos
		if l.src[l.pos] == '[' {
			aot := l.peek("[[")
			if aot {
				l.pos += 2
			} else {
				l.pos++
			}
			parts := l.keyParts()
			table = l.resolve(parts, aot)
			l.record(table, start)
			l.skipLine()
			continue
		}
		if !l.keyValue(table) {
			l.skipLine()
		}
	}
}

// resolve turns the parts of a table header into a path: a part that names
// an array of tables refers to its last element, and the last part of an
// [[array]] header starts a new element.
func (l *locator) resolve(parts []string, aot bool) string {
	path := ""
	for i, p := range parts {
		path = joinKey(path, p)
		if i == len(parts)-1 && aot {
			n := l.aot[path]
			l.aot[path] = n + 1
			path = indexKey(path, n)
		} else if n := l.aot[path]; n > 0 {
			path = indexKey(path, n-1)
		}
	}
	return path
}

// keyParts reads a possibly dotted key: bare, "basic" or 'literal' parts.
func (l *locator) keyParts() []string {
	var parts []string
	for {
		l.skipBlank()
		if l.eof() {
			return parts
		}
		start := l.pos
		var part string
		switch c := l.src[l.pos]; {
		case c == '"':
			raw := l.basicString()
			if s, err := strconv.Unquote(raw); err == nil {
				part = s
			} else {
				part = strings.Trim(raw, `"`)
			}
		case c == '\'':
			part = strings.Trim(l.literalString(), "'")
		default:
			for !l.eof() && isBare(l.src[l.pos]) {
				l.pos++
			}
			part = l.src[start:l.pos]
		}
		if l.pos == start {
			return parts
		}
		parts = append(parts, part)
		l.skipBlank()
		if l.eof() || l.src[l.pos] != '.' {
			return parts
		}
		l.pos++
	}
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// basicString reads a "..." string on one line and returns it with quotes.
func (l *locator) basicString() string {
	start := l.pos
	l.pos++
	for !l.eof() {
		switch l.src[l.pos] {
		case '\\':
			l.pos += 2
		case '"':
			l.pos++
			return l.src[start:l.pos]
		case '\n':
			return l.src[start:l.pos]
		default:
			l.pos++
		}
	}
	l.pos = len(l.src)
	return l.src[start:]
}

// literalString reads a '...' string on one line and returns it with quotes.
func (l *locator) literalString() string {
	start := l.pos
	l.pos++
	for !l.eof() {
		switch l.src[l.pos] {
		case '\'':
			l.pos++
			return l.src[start:l.pos]
		case '\n':
			return l.src[start:l.pos]
		default:
			l.pos++
		}
	}
	return l.src[start:]
}

// multiline skips a """ or ”' string; the opening quotes are at pos.
func (l *locator) multiline(q byte) {
	l.pos += 3
	for !l.eof() {
		c := l.src[l.pos]
		switch {
		case c == '\\' && q == '"':
			l.pos += 2
		case c == q && l.peek(string([]byte{q, q, q})):
			l.pos += 3
			// Up to two more quotes belong to the content: """a"""".
			for i := 0; i < 2 && !l.eof() && l.src[l.pos] == q; i++ {
				l.pos++
			}
			return
		default:
			l.pos++
		}
	}
	l.pos = len(l.src)
}

// value skips one value, recording the elements of arrays and the keys of
// inline tables under path.
func (l *locator) value(path string) {
	l.skipBlank()
	if l.eof() {
		return
	}
	switch c := l.src[l.pos]; {
	case l.peek(`"""`), l.peek(`'''`):
		l.multiline(c)
	case c == '"':
		l.basicString()
	case c == '\'':
		l.literalString()
	case c == '[':
		l.array(path)
	case c == '{':
		l.inlineTable(path)
	default:
		for !l.eof() && !strings.ContainsRune(",]}#\r\n", rune(l.src[l.pos])) {
			l.pos++
		}
	}
}

func (l *locator) array(path string) {
	l.pos++ // [
	if l.nesting++; l.nesting > maxNesting {
		l.pos = len(l.src)
		return
	}
	defer func() { l.nesting-- }()
	for i := 0; ; i++ {
		l.skipSpace()
		if l.eof() {
			return
		}
		if l.src[l.pos] == ']' {
			l.pos++
			return
		}
		start := l.pos
		elem := indexKey(path, i)
		l.record(elem, start)
		l.value(elem)
		l.skipSpace()
		if l.eof() {
			return
		}
		switch l.src[l.pos] {
		case ',':
			l.pos++
		case ']':
			l.pos++
			return
		default:
			if l.pos == start {
				l.pos++
			}
		}
	}
}

func (l *locator) inlineTable(path string) {
	l.pos++ // {
	if l.nesting++; l.nesting > maxNesting {
		l.pos = len(l.src)
		return
	}
	defer func() { l.nesting-- }()
	for {
		l.skipSpace()
		if l.eof() {
			return
		}
		switch l.src[l.pos] {
		case '}':
			l.pos++
			return
		case ',':
			l.pos++
			continue
		}
		if !l.keyValue(path) {
			l.pos++
		}
	}
}
