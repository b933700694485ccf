package pii

import "unicode/utf8"

// StreamMasker masks a text that arrives in pieces (an answer streamed by
// the LLM token by token) and gives out only text that no later piece can
// turn into part of a masked value: a phone number split across two tokens
// is held until it is whole, then masked. It holds back the text from the
// last safe cut on: a cut after a character no masked value can span
// (one that is neither a digit, an ASCII letter, nor one of . _ % + - @,
// nor a space or ideographic space right after a digit). Chinese text is
// thus given out character by character, English word by word, numbers,
// addresses and the words glued to them whole.
//
// The concatenation of everything Write and Flush return is Mask of the
// concatenation of the pieces, always (FuzzStreamMask checks it). A
// StreamMasker is used by one goroutine; its zero value is ready.
type StreamMasker struct {
	held []byte
	// checked is how much of held is known to hold no safe cut: a cut's
	// safety depends only on the characters before it, so a long run
	// without one (a long number) is not scanned again with each piece.
	checked int
	hits    Hits
}

// Write adds piece and returns the masked text that is now safe to give
// out, possibly empty.
func (m *StreamMasker) Write(piece string) string {
	m.held = append(m.held, piece...)
	// A character split across pieces completes later: look again at the
	// last few bytes checked.
	c := safeCut(m.held, max(m.checked-utf8.UTFMax, 0))
	if c == 0 {
		m.checked = len(m.held)
		return ""
	}
	out, h := Scan(string(m.held[:c]))
	m.hits.Add(h)
	m.held = append(m.held[:0], m.held[c:]...)
	m.checked = len(m.held)
	return out
}

// Flush returns the masked rest of the text; the masker is then empty.
func (m *StreamMasker) Flush() string {
	out, h := Scan(string(m.held))
	m.hits.Add(h)
	m.held, m.checked = m.held[:0], 0
	return out
}

// Held returns how many bytes of input are held back.
func (m *StreamMasker) Held() int { return len(m.held) }

// Hits returns the counts of what was masked so far.
func (m *StreamMasker) Hits() Hits { return m.hits }

// safeCut returns the largest n > from such that masking s[:n] and what
// follows it separately is masking them together, whatever follows; 0 when
// there is none (from is the last cut known). No value is found across the cut: emails end at a
// character outside their alphabet and numbers at one that is neither a
// digit, an X nor a separator followed by a digit; the phone's '+' and an
// email's local part are looked for only back to such a character.
func safeCut(s []byte, from int) int {
	for end := len(s); end > from; {
		r, w := utf8.DecodeLastRune(s[:end])
		if r == utf8.RuneError && w <= 1 {
			end -= max(w, 1) // an incomplete or invalid sequence: never cut after it
			continue
		}
		switch {
		case r == ' ' || r == '\u3000':
			// A separator joins digit groups only after a digit.
			prev, pw := utf8.DecodeLastRune(s[:end-w])
			if pw == 0 || !isDigitRune(prev) && !(prev == utf8.RuneError && pw <= 1) {
				return end
			}
		case r < utf8.RuneSelf:
			if !localChar(byte(r)) && r != '@' {
				return end
			}
		case !isDigitRune(r) && r != '\uFF0D':
			return end
		}
		end -= w
	}
	return 0
}

// isDigitRune reports whether r is an ASCII or full-width digit.
func isDigitRune(r rune) bool { return r >= '0' && r <= '9' || r >= '０' && r <= '９' }
