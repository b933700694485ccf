package pii_test

import (
	"strings"
	"testing"

	"sluice/shared/pii"
)

// streamMask feeds pieces to a StreamMasker and returns what it gave out
// after each piece and at the flush.
func streamMask(pieces []string) []string {
	var m pii.StreamMasker
	out := make([]string, 0, len(pieces)+1)
	for _, p := range pieces {
		out = append(out, m.Write(p))
	}
	return append(out, m.Flush())
}

func TestStreamMasker(t *testing.T) {
	for _, tt := range []struct {
		name   string
		pieces []string
		// want is what each Write and the Flush give out.
		want []string
	}{
		{"PhoneSplitAcrossTokens", []string{"请拨打", "138", "1234", "5678", "，谢谢"}, []string{"请拨打", "", "", "", "[phone]，谢谢", ""}},
		{"PhoneWithPlusSplit", []string{"电话 +", "86 138-1234-", "5678。"}, []string{"电话 ", "", "[phone]。", ""}},
		{"EmailSplitAcrossTokens", []string{"Write to sup", "port@exam", "ple.com now"}, []string{"Write to ", "", "[email] ", "now"}},
		{"CardInGroups", []string{"卡号 " + validCard[:4] + " ", validCard[4:8] + " ", validCard[8:] + "。"}, []string{"卡号 ", "", "[bank-card]。", ""}},
		{"FullWidthDigits", []string{"号码１３８", "１２３４５６７８", "好"}, []string{"号码", "", "[phone]好", ""}},
		{"EnglishByWord", []string{"Orders ", "ship wit", "hin 24 hours."}, []string{"Orders ", "ship ", "within ", "24 hours."}},
		{"NumberNotPIIHeldUntilWhole", []string{"订单 12", "345 已发货"}, []string{"订单 ", "12345 已发货", ""}},
		{"SplitInsideARune", []string{"你\xe5", "\xa5\xbd"}, []string{"你", "好", ""}},
		{"EndsHeld", []string{"call 1381234", "5678"}, []string{"call ", "", "[phone]"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := streamMask(tt.pieces)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("gave out %q, want %q", got, tt.want)
			}
			if whole := pii.Mask(strings.Join(tt.pieces, "")); strings.Join(got, "") != whole {
				t.Errorf("concatenation %q, Mask of the whole %q", strings.Join(got, ""), whole)
			}
		})
	}
}

func TestStreamMaskerHits(t *testing.T) {
	var m pii.StreamMasker
	m.Write("a@b.cc 13812345678")
	if m.Held() == 0 {
		t.Error("a trailing number was given out before it could be whole")
	}
	m.Flush()
	if h := m.Hits(); h[pii.Phone] != 1 || h[pii.Email] != 1 || m.Held() != 0 {
		t.Errorf("hits %v, held %d", h, m.Held())
	}
}

// FuzzStreamMask: whatever the text and wherever it is cut into pieces,
// the masker gives out exactly Mask of the whole.
func FuzzStreamMask(f *testing.F) {
	for _, s := range []string{
		"我的电话13812345678", "+86 138-1234-5678", validID, validIDX, validCard, card19,
		"a@b.cc13812345678", "x@13812345678.com", "１３８１２３４５６７８", "138\u30001234\u30005678",
		"12 13812345678 34", validCard[:4] + " " + validCard[4:] + "-" + validCard, "mail me: a.b+c@d-e.example.org, or +8613812345678!",
	} {
		f.Add(s, []byte{1, 3, 5, 7, 2})
		f.Add(s, []byte{0})
	}
	f.Fuzz(func(t *testing.T, in string, cuts []byte) {
		var pieces []string
		rest := in
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(cuts) > 0 {
				n = min(int(cuts[i%len(cuts)])%8+1, len(rest))
			}
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		got := strings.Join(streamMask(pieces), "")
		if want := pii.Mask(in); got != want {
			t.Fatalf("pieces %q: gave out %q, Mask of the whole is %q", pieces, got, want)
		}
	})
}
