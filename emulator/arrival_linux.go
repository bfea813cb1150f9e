package emulator

import (
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"
)

// stampListener asks the kernel to time every segment received by the
// connections ln will accept: the option is inherited by them, so a call
// written as soon as its connection is up is timed too.
func stampListener(ln net.Listener) {
	if sc, ok := ln.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
			})
		}
	}
}

// stampedConn reads with recvmsg to learn when the kernel received the
// bytes it returns.
type stampedConn struct {
	net.Conn
	raw syscall.RawConn
	oob []byte
	st  arrivalStamps
}

func newArrivalConn(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	})
	return &stampedConn{Conn: c, raw: raw, oob: make([]byte, syscall.CmsgSpace(int(unsafe.Sizeof(syscall.Timespec{}))))}
}

func (c *stampedConn) stamps() *arrivalStamps { return &c.st }

// CloseWrite half-closes the TCP connection, as net/http does before
// closing one it answered with "Connection: close".
func (c *stampedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Read is the connection's Read (deadlines included: RawConn.Read keeps
// them) through recvmsg, keeping the kernel's time of the bytes read.
func (c *stampedConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), p, c.oob, 0)
		return !errors.Is(rerr, syscall.EAGAIN)
	})
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	case n == 0:
		return 0, io.EOF
	}
	c.st.latest.Store(kernelTime(c.oob[:oobn]))
	return n, nil
}

// kernelTime is the SO_TIMESTAMPNS time in a read's control messages, in
// Unix ns (0: none).
func kernelTime(oob []byte) int64 {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SO_TIMESTAMPNS &&
			len(m.Data) >= int(unsafe.Sizeof(syscall.Timespec{})) {
			ts := (*syscall.Timespec)(unsafe.Pointer(&m.Data[0]))
			return ts.Nano()
		}
	}
	return 0
}
