package producer

import "testing"

func TestNormalize(t *testing.T) {
	same := [][]string{
		{"优惠券还能用吗？", "优惠券 还能用吗?", "优惠券还能用吗", "  优惠券，还能用吗！！"},
		{"When does my order SHIP?", "when does my order ship", "ＷＨＥＮ　ｄｏｅｓ my order ship？"},
	}
	for _, group := range same {
		for _, q := range group[1:] {
			if normalize(q) != normalize(group[0]) {
				t.Errorf("normalize(%q) = %q, want %q", q, normalize(q), normalize(group[0]))
			}
		}
	}
	if normalize("优惠券还能用吗") == normalize("优惠券不能用吗") {
		t.Error("different questions normalise alike")
	}
}
