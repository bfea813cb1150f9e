package tim

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// FlexString is a string that the API sometimes sends as a JSON number, such
// as admin_getroammsg's LastMsgKey. It decodes from a string, a number
// (kept as written) or null (empty), and encodes as a string.
type FlexString string

// UnmarshalJSON accepts a JSON string, number or null.
func (f *FlexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return fmt.Errorf("decode FlexString: empty value")
	case bytes.Equal(b, []byte("null")):
		*f = ""
		return nil
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("decode FlexString: %w", err)
		}
		*f = FlexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("decode FlexString: want a string or a number, got %.20s", b)
	}
	*f = FlexString(n.String())
	return nil
}
