package emulator

import (
	"testing"
	"time"
)

func TestParseLatency(t *testing.T) {
	tests := []struct {
		in      string
		lo, hi  time.Duration
		wantErr bool
	}{
		{"0", 0, 0, false},
		{"30ms", 30 * time.Millisecond, 30 * time.Millisecond, false},
		{" 20ms - 80ms ", 20 * time.Millisecond, 80 * time.Millisecond, false},
		{"80ms-20ms", 0, 0, true},
		{"-5ms", 0, 0, true},
		{"fast", 0, 0, true},
	}
	for _, tc := range tests {
		lo, hi, err := ParseLatency(tc.in)
		if (err != nil) != tc.wantErr || lo != tc.lo || hi != tc.hi {
			t.Errorf("ParseLatency(%q) = %v, %v, %v; want %v, %v, error %v", tc.in, lo, hi, err, tc.lo, tc.hi, tc.wantErr)
		}
	}
}

func TestParseFaultCodes(t *testing.T) {
	got, err := ParseFaultCodes("10002=0.05, 91000=0.02")
	if err != nil || len(got) != 2 || got[10002] != 0.05 || got[91000] != 0.02 {
		t.Fatalf("ParseFaultCodes = %v, %v", got, err)
	}
	if got, err := ParseFaultCodes(" "); err != nil || len(got) != 0 {
		t.Fatalf("ParseFaultCodes(blank) = %v, %v; want none", got, err)
	}
	for _, bad := range []string{"10002", "10002=1.5", "0=0.1", "x=0.1"} {
		if _, err := ParseFaultCodes(bad); err == nil {
			t.Errorf("ParseFaultCodes(%q): no error", bad)
		}
	}
}

func TestParseDatasetSpec(t *testing.T) {
	got, err := ParseDatasetSpec("groups=200,messages=100000,c2c=5000,heavy=1,heavy-groups=120,heavy-share=0.5,peers=25,topics=3,seed=7")
	want := DatasetSpec{Groups: 200, GroupMessages: 100000, C2CMessages: 5000, HeavySenders: 1, HeavyGroups: 120, HeavyShare: 0.5, Peers: 25, Topics: 3, Seed: 7}
	if err != nil || got.Groups != want.Groups || got.GroupMessages != want.GroupMessages || got.C2CMessages != want.C2CMessages ||
		got.HeavySenders != want.HeavySenders || got.HeavyGroups != want.HeavyGroups || got.HeavyShare != want.HeavyShare ||
		got.Peers != want.Peers || got.Topics != want.Topics || got.Seed != want.Seed {
		t.Fatalf("ParseDatasetSpec = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"groups", "groups=-1", "heavy-share=2", "seed=x", "colour=blue"} {
		if _, err := ParseDatasetSpec(bad); err == nil {
			t.Errorf("ParseDatasetSpec(%q): no error", bad)
		}
	}
}
