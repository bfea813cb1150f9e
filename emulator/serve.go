package emulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Serve answers HTTP on ln until ctx is done, then shuts down, giving calls
// in flight up to 5 s. It counts calls at their arrival (ArrivalListener). It returns nil after a shutdown, or why serving
// stopped.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := s.HTTPServer()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ArrivalListener(ln)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("emulator server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
