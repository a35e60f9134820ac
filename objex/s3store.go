package objex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Store keeps objects in an S3 bucket under a prefix, through minio-go.
type s3Store struct {
	c       *minio.Client
	bucket  string
	prefix  string // "" or ends with "/"
	name    string // s3://bucket/prefix at endpoint, no credentials
	secrets []string
}

// s3PartSize is the multipart part size: a sealed object of tens of MiB
// goes up in several parts, each retried on its own by minio-go.
const s3PartSize = 8 << 20

func newS3Store(ctx context.Context, u *url.URL, o StoreOptions) (*s3Store, error) {
	bucket := u.Host
	if bucket == "" {
		return nil, fmt.Errorf("objex: s3 URL %q names no bucket", u.Redacted())
	}
	if u.User != nil {
		return nil, fmt.Errorf("objex: s3 URL must not carry credentials; use the options or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := validKey(prefix); err != nil {
			return nil, err
		}
		prefix += "/"
	}
	endpoint := firstNonEmpty(o.Endpoint, os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL"))
	region := firstNonEmpty(o.Region, os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION"))
	access := firstNonEmpty(o.AccessKey, os.Getenv("AWS_ACCESS_KEY_ID"))
	secret := firstNonEmpty(o.SecretKey, os.Getenv("AWS_SECRET_ACCESS_KEY"))
	secure := true
	host := "s3.amazonaws.com"
	lookup := minio.BucketLookupAuto
	if endpoint != "" {
		lookup = minio.BucketLookupPath
		if strings.Contains(endpoint, "://") {
			eu, err := url.Parse(endpoint)
			if err != nil || eu.Host == "" {
				return nil, fmt.Errorf("objex: S3 endpoint %q is not a URL", endpoint)
			}
			switch eu.Scheme {
			case "http":
				secure = false
			case "https":
			default:
				return nil, fmt.Errorf("objex: S3 endpoint %q: want http:// or https://", endpoint)
			}
			host = eu.Host
		} else {
			host = endpoint
			secure = !o.Insecure
		}
	}
	var creds *credentials.Credentials
	if access != "" || secret != "" {
		creds = credentials.NewStaticV4(access, secret, "")
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}, &credentials.IAM{}})
	}
	c, err := minio.New(host, &minio.Options{
		Creds:        creds,
		Secure:       secure,
		Region:       region,
		BucketLookup: lookup,
		Transport:    o.Transport,
		// minio-go retries single requests (a part of an upload) a few
		// times; the retry layer above retries whole operations.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("objex: S3 client for %s: %w", host, err)
	}
	scheme := "https"
	if !secure {
		scheme = "http"
	}
	s := &s3Store{c: c, bucket: bucket, prefix: prefix,
		name: fmt.Sprintf("s3://%s/%s (%s://%s)", bucket, strings.TrimSuffix(prefix, "/"), scheme, host)}
	for _, v := range []string{access, secret} {
		if len(v) >= 4 {
			s.secrets = append(s.secrets, v)
		}
	}
	if err := s.ensureBucket(ctx, region); err != nil {
		return nil, err
	}
	return s, nil
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func (s *s3Store) String() string { return s.name }

func (s *s3Store) ensureBucket(ctx context.Context, region string) error {
	ok, err := s.c.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.wrap("objex: "+s.name+": bucket "+s.bucket, err)
	}
	if ok {
		return nil
	}
	err = s.c.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: region})
	if err != nil {
		code := minio.ToErrorResponse(err).Code
		if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			return nil
		}
		return s.wrap("objex: "+s.name+": create bucket "+s.bucket, err)
	}
	return nil
}

// redactedError carries an S3 error with every credential cut out of its
// text; errors.Is and errors.As still see the original.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// wrap classifies and redacts an S3 error: missing objects become
// ErrNotExist, 5xx, throttling and network failures transient.
func (s *s3Store) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	msg := what + ": " + err.Error()
	for _, sec := range s.secrets {
		msg = strings.ReplaceAll(msg, sec, "[redacted]")
	}
	var out error = &redactedError{msg: msg, err: err}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey" || resp.StatusCode == http.StatusNotFound && resp.Code != "NoSuchBucket":
		return fmt.Errorf("%w: %w", out, ErrNotExist)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable || resp.Code == "InvalidRange":
		return fmt.Errorf("%w: %w", out, ErrShort)
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout,
		resp.Code == "SlowDown", resp.Code == "RequestTimeout", resp.Code == "InternalError":
		return transient(out)
	case resp.StatusCode == 0 && !errors.Is(err, context.Canceled):
		// Not an S3 answer: a connection that failed or broke.
		return transient(out)
	}
	return out
}

func (s *s3Store) Put(ctx context.Context, key string, data []byte) error {
	if err := validKey(key); err != nil {
		return err
	}
	var r io.Reader = bytes.NewReader(data)
	if l := limiterFrom(ctx); l != nil {
		r = l.reader(ctx, r)
	}
	_, err := s.c.PutObject(ctx, s.bucket, s.prefix+key, r, int64(len(data)), minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    s3PartSize,
	})
	return s.wrap("put "+key, err)
}

func (s *s3Store) Get(ctx context.Context, key string, off, n int64) ([]byte, error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("%s: negative offset: %w", key, ErrShort)
	}
	if n == 0 {
		return []byte{}, nil
	}
	var opts minio.GetObjectOptions
	if n > 0 {
		if err := opts.SetRange(off, off+n-1); err != nil {
			return nil, err
		}
	} else if off > 0 {
		if err := opts.SetRange(off, 0); err != nil {
			return nil, err
		}
	}
	obj, err := s.c.GetObject(ctx, s.bucket, s.prefix+key, opts)
	if err != nil {
		return nil, s.wrap("get "+key, err)
	}
	defer obj.Close()
	var src io.Reader = obj
	if l := limiterFrom(ctx); l != nil {
		src = l.reader(ctx, src)
	}
	if n < 0 {
		b, err := io.ReadAll(src)
		if err != nil {
			return nil, s.wrap("get "+key, err)
		}
		return b, nil
	}
	buf := make([]byte, n)
	got, err := io.ReadFull(src, buf)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// Fewer bytes than asked: the object is shorter (a real
			// truncation) or the response was cut; the retry layer tells
			// them apart by trying again.
			return nil, fmt.Errorf("get %s: %d of %d bytes at %d: %w", key, got, n, off, ErrShort)
		}
		return nil, s.wrap("get "+key, err)
	}
	return buf, nil
}

func (s *s3Store) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := validKey(key); err != nil {
		return ObjectInfo{}, err
	}
	st, err := s.c.StatObject(ctx, s.bucket, s.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.wrap("stat "+key, err)
	}
	return ObjectInfo{Key: key, Size: st.Size, Modified: st.LastModified}, nil
}

func (s *s3Store) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for oi := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if oi.Err != nil {
			return s.wrap("list "+prefix, oi.Err)
		}
		key := strings.TrimPrefix(oi.Key, s.prefix)
		if err := fn(ObjectInfo{Key: key, Size: oi.Size, Modified: oi.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	if err := validKey(key); err != nil {
		return err
	}
	return s.wrap("delete "+key, s.c.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{}))
}
