package mgmt

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// sftp serves the SFTP subsystem on one channel.
func (s *Server) sftp(ch ssh.Channel, remote string) int {
	h := &sftpHandler{s: s, stderr: ch.Stderr(), remote: remote}
	rs := sftp.NewRequestServer(ch, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h},
		sftp.WithStartDirectory(homeDir))
	// Not rs.Close(): that closes the channel, and the exit status the
	// session sends afterwards would be lost (ssh then exits with -1 and
	// scp in SFTP mode fails).
	err := rs.Serve()
	if err != nil && !errors.Is(err, io.EOF) {
		s.log.Debug("sftp session ended", "remote", remote, "err", err)
		return 1
	}
	return 0
}

// sftpHandler maps pkg/sftp requests onto the virtual tree.
type sftpHandler struct {
	s      *Server
	stderr io.Writer
	remote string
}

// sftpError turns tree errors into SFTP status codes; other errors keep
// their text (the status message the client may show).
func sftpError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sftp.ErrSSHFxNoSuchFile
	case errors.Is(err, fs.ErrPermission):
		return sftp.ErrSSHFxPermissionDenied
	}
	return err
}

func (h *sftpHandler) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	n, err := resolve(r.Filepath)
	if err != nil {
		return nil, sftpError(err)
	}
	f, _, err := h.s.openRead(n)
	if err != nil {
		return nil, sftpError(err)
	}
	return f, nil
}

func (h *sftpHandler) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	n, err := resolve(r.Filepath)
	if err != nil || n.kind != kindConfig {
		return nil, sftp.ErrSSHFxPermissionDenied
	}
	return &upload{
		stderr: h.stderr,
		commit: func(data []byte) error { return h.s.commit(data, h.stderr, h.remote) },
	}, nil
}

func (h *sftpHandler) Filecmd(r *sftp.Request) error {
	if r.Method == "Setstat" {
		// scp in SFTP mode sets the mode and times after an upload; the
		// configuration's mode is not the client's business: accept and
		// ignore.
		if n, err := resolve(r.Filepath); err == nil && n.kind == kindConfig {
			return nil
		}
	}
	return sftp.ErrSSHFxPermissionDenied
}

func (h *sftpHandler) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	n, err := resolve(r.Filepath)
	if err != nil {
		return nil, sftpError(err)
	}
	switch r.Method {
	case "List":
		if n.kind != kindDir {
			return nil, sftp.ErrSSHFxNoSuchFile
		}
		list, err := h.s.list(n)
		if err != nil {
			return nil, sftpError(err)
		}
		return listerAt(list), nil
	case "Stat", "Lstat", "Readlink":
		fi, err := h.s.stat(n)
		if err != nil {
			return nil, sftpError(err)
		}
		return listerAt{fi}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

type listerAt []fs.FileInfo

func (l listerAt) ListAt(ls []os.FileInfo, off int64) (int, error) {
	if off < 0 || off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(ls, l[off:])
	if n < len(ls) {
		return n, io.EOF
	}
	return n, nil
}

// upload buffers an SFTP upload of the configuration in memory and commits
// it when the client closes the file. The buffer starts empty whatever the
// open flags: an upload is always a whole new file (no append or resume).
type upload struct {
	commit func([]byte) error
	stderr io.Writer // where a too large upload is explained

	mu     sync.Mutex
	buf    []byte
	err    error
	closed bool
}

func (u *upload) WriteAt(p []byte, off int64) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		return 0, u.err
	}
	if off < 0 || off > MaxUpload || int64(len(p)) > MaxUpload-off {
		u.err = errTooLarge
		if u.stderr != nil {
			fmt.Fprintf(u.stderr, "%s: %v, the configuration is unchanged\n", configVirtual, errTooLarge)
		}
		return 0, u.err
	}
	if end := int(off) + len(p); end > len(u.buf) {
		u.buf = append(u.buf, make([]byte, end-len(u.buf))...)
	}
	copy(u.buf[off:], p)
	return len(p), nil
}

// TransferError is called by pkg/sftp when the connection drops with the
// file open: the upload is incomplete and must not be committed.
func (u *upload) TransferError(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err == nil {
		u.err = err
	}
}

// Close commits the upload; an error refuses it, and pkg/sftp sends its
// text as the status message of the client's close request.
func (u *upload) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	u.closed = true
	if u.err != nil {
		return u.err
	}
	return u.commit(u.buf)
}
