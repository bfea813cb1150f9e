package tim

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"
)

// DefaultSigTTL is the UserSig validity used when Config.SigTTL is zero.
// Tencent advises at least 24 hours.
const DefaultSigTTL = 24 * time.Hour

// sigEntry is one generated UserSig and when to replace it.
type sigEntry struct {
	sig     string
	renewAt time.Time // by the cache's clock
}

// sigCache hands out the admin UserSig. It generates one on first use and
// again once a tenth of its TTL is left, or after an invalidation. One
// goroutine generates while the others wait on the mutex, then reuse the new
// sig: there is never more than one generation per renewal.
type sigCache struct {
	generate func(ttl time.Duration) (string, error)
	now      func() time.Time
	ttl      time.Duration

	cur atomic.Pointer[sigEntry] // nil: none, or invalidated
	mu  sync.Mutex               // serializes generation
	gen atomic.Int64             // number of generations, for tests and metrics
}

// newSigCache returns a cache generating sigs for admin with the given key.
func newSigCache(sdkAppID int64, admin string, key Secret, ttl time.Duration, now func() time.Time) *sigCache {
	return &sigCache{
		generate: func(ttl time.Duration) (string, error) {
			return tencentyun.GenUserSig(int(sdkAppID), key.Reveal(), admin, int(ttl/time.Second))
		},
		now: now,
		ttl: ttl,
	}
}

// get returns a UserSig valid for well over a tenth of the TTL.
func (s *sigCache) get() (string, error) {
	if e := s.cur.Load(); e != nil && s.now().Before(e.renewAt) {
		return e.sig, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if e := s.cur.Load(); e != nil && now.Before(e.renewAt) {
		return e.sig, nil // another goroutine renewed it while we waited
	}
	sig, err := s.generate(s.ttl)
	if err != nil {
		// The library's errors come from JSON and zlib and never carry the key.
		return "", fmt.Errorf("generate UserSig: %w", err)
	}
	s.gen.Add(1)
	s.cur.Store(&sigEntry{sig: sig, renewAt: now.Add(s.ttl - s.ttl/10)})
	return sig, nil
}

// invalidate drops the cached sig if it is still used, the one a call was
// refused with, so that many calls refused at once cause one renewal.
func (s *sigCache) invalidate(used string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.cur.Load(); e != nil && e.sig == used {
		s.cur.Store(nil)
	}
}

// invalidateAll drops the cached sig.
func (s *sigCache) invalidateAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.Store(nil)
}
