// Package faq answers customer questions from a FAQ file: entries of
// question variants and one answer each. It is the fallback that still gives
// a real answer when no language model does.
//
// Questions are ranked with BM25 over character bigrams, which needs no word
// segmenter for Chinese: "什么时候发货" becomes 什么 么时 时候 候发 发货. Runs of
// Latin letters and digits are whole words instead ("ship", "order"). Before
// that, text is normalised: full-width forms become half-width, letters lower
// case, punctuation and symbols separate tokens, and a few filler words
// (请问, 吗, please, the ...) are dropped.
//
// A match must reach a minimum score. Raw BM25 grows with the length of the
// question, so the score compared with the threshold is normalised: the
// BM25 score of the best variant divided by the sum of the IDF weights of
// the question's terms (terms no variant has weigh like the rarest ones).
// It is about the share of the question's information that the variant
// covers: 1 or a little more for a question worded like a variant, 0 when
// they share nothing.
//
// File format (YAML, or JSON with the same fields when the name ends in .json):
//
//	entries:
//	  - questions: [什么时候发货, 多久发货, when will my order ship]
//	    answer: 订单付款后 24 小时内发货 ...
package faq

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// DefaultMinScore is the normalised score a match needs by default.
const DefaultMinScore = 0.4

// BM25 parameters, the usual ones.
const (
	k1 = 1.2
	b  = 0.75
)

// Entry is one FAQ answer with the ways customers ask for it.
type Entry struct {
	Questions []string `yaml:"questions" json:"questions"`
	Answer    string   `yaml:"answer" json:"answer"`
}

type file struct {
	Entries []Entry `yaml:"entries" json:"entries"`
}

// Errors of Parse and NewIndex.
var (
	// ErrEmpty is returned for a FAQ without entries.
	ErrEmpty = errors.New("faq has no entries")
	// ErrInvalidEntry is returned for an entry without an answer or without
	// a question that has a searchable word.
	ErrInvalidEntry = errors.New("invalid faq entry")
)

// Parse reads FAQ entries from data: JSON when name ends in .json, YAML
// otherwise. It returns an error for malformed data, unknown fields, no
// entries or an invalid entry.
func Parse(data []byte, name string) ([]Entry, error) {
	var f file
	if strings.EqualFold(filepath.Ext(name), ".json") {
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
	} else {
		dec := yaml.NewDecoder(strings.NewReader(string(data)))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
	}
	if len(f.Entries) == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrEmpty)
	}
	return f.Entries, nil
}

// ReadFile reads and parses the FAQ file at path.
func ReadFile(path string) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read faq: %w", err)
	}
	return Parse(data, path)
}

//go:embed sample.yaml
var sampleYAML []byte

// Sample returns the entries of the sample FAQ built into the binary: an
// online shop's shipping, returns, coupons, invoices, membership and
// refunds, in Chinese and English.
func Sample() []Entry {
	entries, err := Parse(sampleYAML, "sample.yaml")
	if err != nil {
		panic("faq: embedded sample is invalid: " + err.Error()) // caught by the package's tests
	}
	return entries
}

// Index ranks an FAQ's entries against a question. It is immutable and safe
// for concurrent use.
type Index struct {
	entries  []Entry
	docs     []doc // one per question variant
	postings map[string][]posting
	avgLen   float64
	minScore float64
}

type doc struct {
	entry    int
	question string
	length   int
}

type posting struct {
	doc int32
	tf  int32
}

// Match is an entry found for a question.
type Match struct {
	// Entry is the index of the entry in the FAQ, Question the variant
	// that matched best.
	Entry    int
	Question string
	Answer   string
	// Score is the normalised BM25 score (see the package doc).
	Score float64
}

// NewIndex indexes entries. A Best match needs a normalised score of at
// least minScore (DefaultMinScore when minScore is 0). It returns ErrEmpty
// or ErrInvalidEntry for a FAQ it cannot use.
func NewIndex(entries []Entry, minScore float64) (*Index, error) {
	if len(entries) == 0 {
		return nil, ErrEmpty
	}
	if minScore == 0 {
		minScore = DefaultMinScore
	}
	ix := &Index{entries: entries, postings: map[string][]posting{}, minScore: minScore}
	total := 0
	for i, e := range entries {
		if strings.TrimSpace(e.Answer) == "" {
			return nil, fmt.Errorf("%w: entry %d has no answer", ErrInvalidEntry, i+1)
		}
		n := 0
		for _, q := range e.Questions {
			terms := Terms(q)
			if len(terms) == 0 {
				continue
			}
			id := int32(len(ix.docs))
			ix.docs = append(ix.docs, doc{entry: i, question: q, length: len(terms)})
			total += len(terms)
			tf := map[string]int32{}
			for _, t := range terms {
				tf[t]++
			}
			for t, c := range tf {
				ix.postings[t] = append(ix.postings[t], posting{doc: id, tf: c})
			}
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: entry %d has no searchable question", ErrInvalidEntry, i+1)
		}
	}
	ix.avgLen = float64(total) / float64(len(ix.docs))
	return ix, nil
}

// MinScore returns the score a Best match needs.
func (ix *Index) MinScore() float64 { return ix.minScore }

// Len returns the number of entries.
func (ix *Index) Len() int { return len(ix.entries) }

func (ix *Index) idf(t string) float64 {
	n := float64(len(ix.postings[t]))
	N := float64(len(ix.docs))
	return math.Log(1 + (N-n+0.5)/(n+0.5))
}

// Rank returns up to n entries in order of their best variant's score,
// best first, whatever their score. It returns nothing for a question
// without searchable words.
func (ix *Index) Rank(question string, n int) []Match {
	terms := Terms(question)
	if len(terms) == 0 || n <= 0 {
		return nil
	}
	slices.Sort(terms)
	terms = slices.Compact(terms)
	scores := make([]float64, len(ix.docs))
	var norm float64
	for _, t := range terms {
		idf := ix.idf(t)
		norm += idf
		for _, p := range ix.postings[t] {
			tf := float64(p.tf)
			dl := float64(ix.docs[p.doc].length)
			scores[p.doc] += idf * tf * (k1 + 1) / (tf + k1*(1-b+b*dl/ix.avgLen))
		}
	}
	best := make([]Match, len(ix.entries))
	for i := range best {
		best[i].Entry = -1
	}
	for d, s := range scores {
		if s == 0 {
			continue
		}
		e := ix.docs[d].entry
		if s /= norm; best[e].Entry < 0 || s > best[e].Score {
			best[e] = Match{Entry: e, Question: ix.docs[d].question, Answer: ix.entries[e].Answer, Score: s}
		}
	}
	best = slices.DeleteFunc(best, func(m Match) bool { return m.Entry < 0 })
	slices.SortStableFunc(best, func(a, b Match) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return a.Entry - b.Entry
	})
	return best[:min(n, len(best))]
}

// Best returns the best entry for question, and false when none reaches the
// minimum score.
func (ix *Index) Best(question string) (Match, bool) {
	m := ix.Rank(question, 1)
	if len(m) == 0 || m[0].Score < ix.minScore {
		return Match{}, false
	}
	return m[0], true
}

// stopwords are dropped before tokenising: fillers that say nothing about
// the topic of a question.
var (
	hanFillers = strings.NewReplacer(
		"请问", " ", "你好", " ", "您好", " ", "麻烦", " ", "谢谢", " ", "一下", " ",
		"我想", " ", "我要", " ", "想要", " ", "帮我", " ", "我们", " ", "你们", " ", "我", " ",
		"吗", " ", "呢", " ", "啊", " ", "吧", " ", "呀", " ", "哦", " ", "嗯", " ", "了", " ", "的", " ",
	)
	latinStopwords = map[string]bool{
		"a": true, "an": true, "the": true, "i": true, "my": true, "me": true, "is": true, "are": true,
		"do": true, "does": true, "to": true, "of": true, "it": true, "please": true, "hi": true,
		"hello": true, "you": true, "your": true, "can": true, "and": true, "for": true, "in": true, "on": true,
		"what": true, "when": true, "where": true, "why": true, "how": true, "will": true, "would": true,
		"could": true, "should": true, "there": true, "this": true, "that": true, "any": true, "be": true,
	}
)

// Normalize folds s for matching: full-width forms to half-width, the
// ideographic space to a space, letters to lower case, and every rune that
// is not a letter or digit to a space.
func Normalize(s string) string {
	var sb strings.Builder
	sb.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= 0xFF01 && r <= 0xFF5E:
			r -= 0xFEE0
		case r == 0x3000:
			r = ' '
		}
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			sb.WriteRune(unicode.ToLower(r))
		case r == utf8.RuneError:
			sb.WriteByte(' ')
		default:
			sb.WriteByte(' ')
		}
	}
	return hanFillers.Replace(sb.String())
}

// cjk reports whether r is written without spaces between words.
func cjk(r rune) bool {
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul)
}

// Terms returns the index terms of s: character bigrams of CJK runs (a lone
// CJK character is its own term) and whole words of other letters and
// digits, stopwords left out.
func Terms(s string) []string {
	s = Normalize(s)
	var terms []string
	var prev rune // previous CJK rune of the current run, or 0
	run := 0      // length of the current CJK run
	word := -1    // start of the current Latin word, or -1
	flushWord := func(end int) {
		if word >= 0 {
			if w := s[word:end]; !latinStopwords[w] {
				terms = append(terms, w)
			}
			word = -1
		}
	}
	flushRun := func() {
		if run == 1 {
			terms = append(terms, string(prev))
		}
		run, prev = 0, 0
	}
	for i, r := range s {
		switch {
		case cjk(r):
			flushWord(i)
			if run > 0 {
				terms = append(terms, string([]rune{prev, r}))
			}
			prev = r
			run++
		case r == ' ':
			flushWord(i)
			flushRun()
		default:
			flushRun()
			if word < 0 {
				word = i
			}
		}
	}
	flushWord(len(s))
	flushRun()
	return terms
}
