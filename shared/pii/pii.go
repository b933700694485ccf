// Package pii finds and masks personal data in free text: mainland-China
// mobile numbers, 18-digit resident ID card numbers, bank card numbers and
// e-mail addresses. Every hit is replaced by a label without digits or '@'
// ("[phone]", "[id-card]", "[bank-card]", "[email]"), so masking is
// idempotent and a masked text contains no digit of the original value.
//
// What counts as a hit:
//
//   - phone: 11 digits 1[3-9]xxxxxxxxx, optionally after +86, 86 or 0086,
//     with single spaces or dashes between digit groups ("+86 138-1234-5678").
//   - id_card: 17 digits and a check character (digit or X), with a valid
//     ISO 7064 MOD 11-2 checksum and a plausible birth date.
//   - bank_card: 13 to 19 digits passing the Luhn check and starting like a
//     payment card (cardIssuer: UnionPay, Visa, Mastercard, Amex, JCB,
//     Diners, Discover, Maestro, Mir, and the 95 prefix of Chinese banks'
//     older debit cards), also in groups ("6222 0212 3456 7890 123"). One
//     random number in ten passes the Luhn check; the issuer ranges keep
//     most order and tracking numbers out.
//   - email: local@domain.tld with an alphabetic top-level domain of two or
//     more letters.
//
// A number counts only as a whole: digits directly before or after it (a
// longer number) prevent a hit. Letters and other characters do not, so
// "电话13812345678" and "tel:13812345678" are found. Full-width digits
// (０-９) count as digits.
//
// Mask and Scan are pure functions; StreamMasker masks a text that comes in
// pieces (a streamed answer) the same way, holding back what could still
// become part of a value; Auditor adds the metric and the audit
// log line, and Handler masks every log record.
//
// Metrics (on the registerer given to NewAuditor): see docs/metrics.md,
// generated from the registries by tests/metrics_doc_test.go.
package pii

import "strings"

// Kind is a category of personal data.
type Kind int

// The kinds of personal data found.
const (
	Phone Kind = iota
	IDCard
	BankCard
	Email
	numKinds
)

// Kinds lists every kind, in the order of Hits.
var Kinds = [numKinds]Kind{Phone, IDCard, BankCard, Email}

// String returns the kind's metric label: phone, id_card, bank_card, email.
func (k Kind) String() string {
	switch k {
	case Phone:
		return "phone"
	case IDCard:
		return "id_card"
	case BankCard:
		return "bank_card"
	case Email:
		return "email"
	}
	return "unknown"
}

// Label returns what a hit of kind k is replaced with.
func (k Kind) Label() string {
	switch k {
	case Phone:
		return "[phone]"
	case IDCard:
		return "[id-card]"
	case BankCard:
		return "[bank-card]"
	case Email:
		return "[email]"
	}
	return "[pii]"
}

// Hits counts the values found, by kind.
type Hits [numKinds]int

// Total returns the number of values found.
func (h Hits) Total() int {
	n := 0
	for _, c := range h {
		n += c
	}
	return n
}

// Add adds o's counts to h.
func (h *Hits) Add(o Hits) {
	for i := range h {
		h[i] += o[i]
	}
}

// Mask returns s with every phone number, ID card number, bank card number
// and e-mail address replaced by its kind's label. It returns s itself when
// there is nothing to mask.
func Mask(s string) string {
	m, _ := Scan(s)
	return m
}

// Scan is Mask that also counts what it masked.
func Scan(s string) (string, Hits) {
	if !suspicious(s) {
		return s, Hits{}
	}
	out, hits := maskEmails(s)
	out, more := maskNumbers(out)
	hits.Add(more)
	return out, hits
}

// masker builds the masked copy of s, from the first replacement on; s
// itself is the result when nothing was replaced. It holds the counts
// rather than a pointer to the caller's: escape analysis does not tell a
// struct's fields apart, and the builder's buffer goes to the heap.
type masker struct {
	s     string
	hits  Hits
	b     strings.Builder
	last  int // end of the text copied to b so far
	wrote bool
}

// replace replaces s[start:end], a value of kind k, with k's label and
// counts it. Replacements come in the order of the text.
func (m *masker) replace(start, end int, k Kind) {
	if !m.wrote {
		m.b.Grow(len(m.s))
		m.wrote = true
	}
	m.b.WriteString(m.s[m.last:start])
	m.b.WriteString(k.Label())
	m.last = end
	m.hits[k]++
}

// result returns the masked text and the counts of what was replaced.
func (m *masker) result() (string, Hits) {
	if !m.wrote {
		return m.s, m.hits
	}
	m.b.WriteString(m.s[m.last:])
	return m.b.String(), m.hits
}

// suspicious reports whether s has an ASCII digit, a full-width digit or an
// '@': texts without one cannot hold a hit.
func suspicious(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' || c == '@' {
			return true
		}
		// Full-width digits are EF BC 90..99.
		if c == 0xEF && i+2 < len(s) && s[i+1] == 0xBC && s[i+2] >= 0x90 && s[i+2] <= 0x99 {
			return true
		}
	}
	return false
}

// digitAt returns the value of the digit starting at s[i] and its width in
// bytes, or width 0 when s[i] starts no digit.
func digitAt(s string, i int) (byte, int) {
	c := s[i]
	if c >= '0' && c <= '9' {
		return c - '0', 1
	}
	if c == 0xEF && i+2 < len(s) && s[i+1] == 0xBC && s[i+2] >= 0x90 && s[i+2] <= 0x99 {
		return s[i+2] - 0x90, 3
	}
	return 0, 0
}

// separatorAt returns the width of a separator allowed between digit groups
// at s[i] (space, '-', ideographic space, full-width hyphen), or 0.
func separatorAt(s string, i int) int {
	switch c := s[i]; {
	case c == ' ' || c == '-':
		return 1
	case c == 0xE3 && strings.HasPrefix(s[i:], "\u3000"):
		return 3
	case c == 0xEF && strings.HasPrefix(s[i:], "\uFF0D"):
		return 3
	}
	return 0
}

// group is a run of digits of a number candidate.
type group struct {
	start, end int  // byte offsets in the text; end after the last digit (and X)
	first, n   int  // index of its first digit in the candidate's digits, and count
	x          bool // ends with an X (an ID card's check character)
}

// maxDigits bounds the digits a hit may have (bank cards: 19).
const maxDigits = 19

// maskNumbers replaces phone, ID card and bank card numbers in s.
func maskNumbers(s string) (string, Hits) {
	m := masker{s: s}
	var (
		groups [24]group
		digits [64]byte
	)
	for i := 0; i < len(s); {
		if _, w := digitAt(s, i); w == 0 {
			i++
			continue
		}
		gs, ds, end := candidate(s, i, groups[:0], digits[:0])
		maskGroups(&m, gs, ds)
		i = end
	}
	return m.result()
}

// candidate reads the number candidate starting at s[i]: digit groups
// joined by single separators. It starts after a non-digit (the caller
// skips whole candidates) and ends before one, so only whole numbers are
// classified. It appends the groups to gs and their digits to ds, and
// returns them with the candidate's end.
func candidate(s string, i int, gs []group, ds []byte) ([]group, []byte, int) {
	j := i
	for {
		g := group{start: j, first: len(ds)}
		for j < len(s) {
			d, w := digitAt(s, j)
			if w == 0 {
				break
			}
			ds = append(ds, d)
			j += w
		}
		g.n = len(ds) - g.first
		if j < len(s) && (s[j] == 'X' || s[j] == 'x') {
			g.x = true
			j++
		}
		g.end = j
		gs = append(gs, g)
		if g.x || j >= len(s) {
			return gs, ds, j
		}
		sw := separatorAt(s, j)
		if sw == 0 || j+sw >= len(s) {
			return gs, ds, j
		}
		if _, dw := digitAt(s, j+sw); dw == 0 {
			return gs, ds, j
		}
		j += sw
	}
}

// maskGroups masks the hits among a candidate's groups gs, whose digits
// are ds: from each group on, the longest span of whole groups that is a
// hit; the next span starts after it.
func maskGroups(m *masker, gs []group, ds []byte) {
	for a, top := 0, 0; a < len(gs); {
		// top: the last group a span from a can reach within maxDigits.
		top = max(top, a)
		for top+1 < len(gs) && gs[top+1].first+gs[top+1].n-gs[a].first <= maxDigits {
			top++
		}
		kind, z := longestHit(gs[a:top+1], ds)
		if kind < 0 {
			a++
			continue
		}
		z += a
		start, end := gs[a].start, gs[z].end
		if gs[z].x && kind != IDCard {
			end-- // an X after a phone or card number is not part of it
		}
		if kind == Phone && start > 0 && m.s[start-1] == '+' {
			start--
		}
		m.replace(start, end, kind)
		a = z + 1
	}
}

// longestHit returns the kind of the longest span of gs, starting at its
// first group, that is a hit, and the index of the span's last group; or
// kind -1.
func longestHit(gs []group, ds []byte) (Kind, int) {
	first := gs[0].first
	for e := len(gs) - 1; e >= 0; e-- {
		if k := classify(ds[first:gs[e].first+gs[e].n], gs[e].x); k >= 0 {
			return k, e
		}
	}
	return -1, 0
}

// classify returns the kind of the digits ds, or -1. x says an X follows
// them, which makes 17 digits an ID card number's candidate.
func classify(ds []byte, x bool) Kind {
	n := len(ds)
	switch {
	case n == 17 && x && validID(ds, 10):
		return IDCard
	case n == 18 && validID(ds[:17], int(ds[17])):
		return IDCard
	case n == 11 && mobile(ds):
		return Phone
	case n == 13 && ds[0] == 8 && ds[1] == 6 && mobile(ds[2:]):
		return Phone
	case n == 15 && ds[0] == 0 && ds[1] == 0 && ds[2] == 8 && ds[3] == 6 && mobile(ds[4:]):
		return Phone
	case n >= 13 && n <= maxDigits && cardIssuer(ds) && luhn(ds):
		return BankCard
	}
	return -1
}

// mobile reports whether 11 digits are a mainland-China mobile number.
func mobile(ds []byte) bool { return len(ds) == 11 && ds[0] == 1 && ds[1] >= 3 }

var idWeights = [17]int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}

// idCheck maps the weighted sum mod 11 to the check character (10 is X).
var idCheck = [11]int{1, 0, 10, 9, 8, 7, 6, 5, 4, 3, 2}

// validID reports whether 17 digits and the check character (0-9, 10 for X)
// form a resident ID number: checksum and a plausible birth date.
func validID(ds []byte, check int) bool {
	if len(ds) != 17 {
		return false
	}
	sum := 0
	for i, d := range ds {
		sum += int(d) * idWeights[i]
	}
	if idCheck[sum%11] != check {
		return false
	}
	year := int(ds[6])*1000 + int(ds[7])*100 + int(ds[8])*10 + int(ds[9])
	month := int(ds[10])*10 + int(ds[11])
	day := int(ds[12])*10 + int(ds[13])
	return year >= 1900 && year <= 2099 && month >= 1 && month <= 12 && day >= 1 && day <= 31
}

// cardIssuer reports whether the digits ds (at least 4) start like a
// payment card number: 2200-2204 (Mir), 2221-2720 (Mastercard), 30 and 34-38
// (Diners, Amex, JCB), 4 (Visa), 5 (Mastercard, Maestro), 6 (UnionPay,
// Discover, Maestro) or 95 (the older debit cards of Chinese banks, such as
// ICBC's 9558).
func cardIssuer(ds []byte) bool {
	p2 := int(ds[0])*10 + int(ds[1])
	p4 := p2*100 + int(ds[2])*10 + int(ds[3])
	switch ds[0] {
	case 2:
		return p4 >= 2200 && p4 <= 2204 || p4 >= 2221 && p4 <= 2720
	case 3:
		return p2 == 30 || p2 >= 34 && p2 <= 38
	case 4, 5, 6:
		return true
	case 9:
		return p2 == 95
	}
	return false
}

// luhn reports whether ds passes the Luhn check.
func luhn(ds []byte) bool {
	sum := 0
	for i := len(ds) - 1; i >= 0; i-- {
		d := int(ds[i])
		if (len(ds)-1-i)%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

// maskEmails replaces e-mail addresses in s.
func maskEmails(s string) (string, Hits) {
	if strings.IndexByte(s, '@') < 0 {
		return s, Hits{}
	}
	m := masker{s: s}
	for i := 0; i < len(s); i++ {
		if s[i] != '@' || i < m.last {
			continue
		}
		l := i
		for l > m.last && localChar(s[l-1]) {
			l--
		}
		if l == i {
			continue
		}
		end := emailDomainEnd(s, i+1)
		if end < 0 {
			continue
		}
		m.replace(l, end, Email)
		i = end - 1
	}
	return m.result()
}

func localChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
}

func domainChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-'
}

func letter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// emailDomainEnd returns where the domain starting at s[i] ends, or -1 when
// there is none. The domain ends after the letters that follow its last
// usable dot (the top-level domain, two or more letters), so text glued to
// it ("a@b.cc13812345678") is left to the other kinds.
func emailDomainEnd(s string, i int) int {
	end := i
	for end < len(s) && domainChar(s[end]) {
		end++
	}
	for dot := strings.LastIndexByte(s[i:end], '.'); dot >= 0; dot = strings.LastIndexByte(s[i:i+dot], '.') {
		p := i + dot
		if p == i || s[p-1] == '.' || s[p-1] == '-' {
			continue
		}
		t := p + 1
		for t < end && letter(s[t]) {
			t++
		}
		if t-(p+1) >= 2 {
			return t
		}
	}
	return -1
}

// labels replaces every label with a space.
var labels = strings.NewReplacer(Phone.Label(), " ", IDCard.Label(), " ", BankCard.Label(), " ", Email.Label(), " ")

// StripLabels returns masked text without the labels Mask put in, for
// matching it against text that never held personal data (an FAQ).
func StripLabels(masked string) string {
	if strings.IndexByte(masked, '[') < 0 {
		return masked
	}
	return labels.Replace(masked)
}
