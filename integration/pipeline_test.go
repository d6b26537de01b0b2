package integration

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// eicar is the 68-byte EICAR anti-virus test file, no newline.
const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// A file carrying the EICAR test string ends quarantined, with a reason, and never shows up in
// Arrivals; a clean file sent alongside it does.
func TestEICARQuarantined(t *testing.T) {
	if len(eicar) != 68 {
		t.Fatalf("EICAR string is %d bytes, want 68", len(eicar))
	}
	d := startDaemon(t, mftdtest.Options{})
	_, alice := d.NewUser("alice")
	ctx := testCtx(t, 2*time.Minute)

	bad := create(t, ctx, alice, int64(len(eicar)), map[string]string{"filename": "eicar.com.txt"})
	patch(t, ctx, alice, bad, 0, bytes.NewReader([]byte(eicar)), int64(len(eicar)), mftdtest.Checksum("sha256", []byte(eicar)))

	// The clean file goes up with creation-with-upload: the first PATCH rides on the POST.
	clean := readAllData(t, 1<<20, 3)
	r, err := alice.CreateWithUpload(ctx, int64(len(clean)), map[string]string{"filename": "clean.bin", "sha256": mftdtest.SHA256Hex(clean)},
		bytes.NewReader(clean), int64(len(clean)))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusCreated || r.Offset() != int64(len(clean)) {
		t.Fatalf("creation-with-upload of %d bytes: %s; want 201 with Upload-Offset %d", len(clean), r, len(clean))
	}
	good := alice.Resolve(r.Header.Get("Location"))

	info := waitTerminal(t, ctx, alice, bad, time.Minute)
	if info.Status != "quarantined" {
		t.Errorf("EICAR upload: status %q (reason %q), want quarantined", info.Status, info.Reason)
	}
	if info.Reason == "" {
		t.Errorf("EICAR upload: quarantined without a reason")
	}
	wantAvailable(t, waitTerminal(t, ctx, alice, good, time.Minute), int64(len(clean)), mftdtest.SHA256Hex(clean))

	files := arrivals(t, ctx, alice)
	findArrival(t, files, "clean.bin")
	for _, f := range files {
		if f.Name == "eicar.com.txt" || f.SHA256 == mftdtest.SHA256Hex([]byte(eicar)) || f.Size == int64(len(eicar)) {
			t.Errorf("arrivals list the quarantined EICAR file: %+v", f)
		}
	}
	if len(files) != 1 {
		t.Errorf("arrivals: %+v, want only clean.bin", files)
	}
}

// Another user cannot see, feed or delete someone's upload: every tus request on it answers 404
// (never 403) and changes nothing; the owner then finishes it as if nothing happened.
func TestOtherUserGets404(t *testing.T) {
	const size = 8 << 20
	const half = size / 2
	data := readAllData(t, size, 4)
	sum := mftdtest.SHA256Hex(data)

	d := startDaemon(t, mftdtest.Options{})
	_, alice := d.NewUser("alice")
	_, bob := d.NewUser("bob")
	ctx := testCtx(t, 2*time.Minute)

	url := create(t, ctx, alice, size, map[string]string{"filename": "cohort.csv", "sha256": sum})
	patch(t, ctx, alice, url, 0, bytes.NewReader(data[:half]), half, "")

	if r, err := bob.Head(ctx, url); err != nil || r.Status != http.StatusNotFound {
		t.Errorf("bob HEAD on alice's upload: %v %v; want 404", r, err)
	}
	rest := data[half:]
	if r, err := bob.Patch(ctx, url, half, bytes.NewReader(rest), int64(len(rest)), mftdtest.Checksum("sha1", rest)); err != nil || r.Status != http.StatusNotFound {
		t.Errorf("bob PATCH on alice's upload at the right offset: %v %v; want 404", r, err)
	}
	if r, err := bob.Delete(ctx, url); err != nil || r.Status != http.StatusNotFound {
		t.Errorf("bob DELETE on alice's upload: %v %v; want 404", r, err)
	}
	if _, r, err := bob.Upload(ctx, mftdtest.UploadID(url)); err != nil || r.Status != http.StatusNotFound {
		t.Errorf("bob GET /api/v1/uploads/{alice's id}: %v %v; want 404", r, err)
	}

	if off := head(t, ctx, alice, url); off != half {
		t.Fatalf("alice HEAD after bob's attempts: Upload-Offset %d, want %d (unchanged)", off, half)
	}
	patch(t, ctx, alice, url, half, bytes.NewReader(rest), int64(len(rest)), mftdtest.Checksum("md5", rest))
	wantAvailable(t, waitTerminal(t, ctx, alice, url, time.Minute), size, sum)
	findArrival(t, arrivals(t, ctx, alice), "cohort.csv")
	if files := arrivals(t, ctx, bob); len(files) != 0 {
		t.Errorf("bob's arrivals: %+v, want empty", files)
	}
}
