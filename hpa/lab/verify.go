package lab

import (
	"context"
	"errors"
	"fmt"

	"sluice/shared/envelope"
	"sluice/shared/store"
)

// verdict is what the dialogs' histories say of the accepted questions.
type verdict struct {
	answered   int64 // one user turn and one assistant turn in the history
	expired    int64 // no answer, and the store says the pipeline expired it
	lost       int64 // neither answered nor expired
	duplicates int64 // turns beyond the first of a request, user or assistant
}

// verify reads the history of every dialog that has an accepted question
// and checks each: its question and its answer each once, in its dialog; a
// question without an answer counts as expired when the store holds its
// expiry, as lost otherwise.
func verify(ctx context.Context, st *store.Redis, acc []accepted) (verdict, error) {
	type dialogKey struct{ user, dialog string }
	byDialog := map[dialogKey][]string{}
	for _, a := range acc {
		k := dialogKey{a.user, a.dialog}
		byDialog[k] = append(byDialog[k], a.requestID)
	}
	var v verdict
	for k, ids := range byDialog {
		d := store.Dialog{Tenant: labTenant, User: k.user, ID: k.dialog}
		turns, err := st.History(ctx, d)
		if err != nil {
			return v, fmt.Errorf("read the history of dialog %s: %w", k.dialog, err)
		}
		count := map[string][2]int64{} // request id: user turns, assistant turns
		for _, t := range turns {
			c := count[t.RequestID]
			if t.Role == envelope.RoleUser {
				c[0]++
			} else {
				c[1]++
			}
			count[t.RequestID] = c
		}
		for _, id := range ids {
			c := count[id]
			v.duplicates += max(c[0]-1, 0) + max(c[1]-1, 0)
			switch {
			case c[0] >= 1 && c[1] >= 1:
				v.answered++
			default:
				res, err := st.Result(ctx, d, id)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return v, fmt.Errorf("read the result of %s: %w", id, err)
				}
				if err == nil && res.State == store.StateExpired {
					v.expired++
				} else {
					v.lost++
				}
			}
		}
	}
	return v, nil
}
