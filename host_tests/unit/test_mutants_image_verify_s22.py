"""ota.image_verify, session 22 survivors (issue 15): what the run left alive and a test can tell.

`Verifier.feed__mutmut_15` (`chunk[pos:pos + take]` even when the chunk is all segment data): the
same bytes are hashed, but through a slice per chunk. The read-back (update.py) feeds the hashing
Verifier the writer's own buffer, 4 KiB at a time; the data path allocates nothing per chunk (the
writer and fetch pin it for theirs), so a chunk that lies wholly in a segment's data reaches the hash
as the very object the caller gave.

`Verifier.__init____mutmut_25` (`checksum_ok = ""` until the tail is read): listed equivalent in
session 20 ("set from the image before it is read"), but otactl's inspector reads it after a failure
too: `checksum_ok is not None` decides whether `otactl image inspect` shows a checksum row, and for
an image that ends inside its segments there is no checksum to show."""
import fakes
from ota import image_verify
from otactl import firmware_image

APP = fakes.build_image("1.2.3", payload_size=5000)
DEVICE = firmware_image.device_context(running_project="ota-test")  # fakes' images are of this project


class Seen:
    # The Verifier's hash object, recording what each update() was given.
    def __init__(self, sha):
        self.sha, self.given = sha, []

    def update(self, data):
        self.given.append(data)
        self.sha.update(data)

    def digest(self):
        return self.sha.digest()


def test_a_chunk_wholly_in_segment_data_is_hashed_as_given_not_sliced():
    v = image_verify.Verifier(None)
    v._sha = seen = Seen(v._sha)
    blob = memoryview(APP)
    v.feed(blob[:24 + 8])  # the header and segment 0's header: copied into the small field
    data = blob[32:32 + 100]  # inside segment 0's data
    v.feed(data)
    assert seen.given[-1] is data
    v.feed(blob[132:])
    assert v.finish() == len(APP) and v.checksum_ok is True and v.hash_ok is True


def test_an_image_cut_inside_its_segments_has_no_checksum_row_in_the_inspection():
    for cut in (1000, len(APP) - 40):  # inside segment 1's data; inside the padding before the checksum
        checks = firmware_image.inspect_image(APP[:cut], device=DEVICE)
        names = [c.name for c in checks]
        assert ("segments", False, "truncated") == tuple(checks[names.index("segments")])[:3], cut
        assert "checksum" not in names and "appended hash" not in names, names
    assert "checksum" in [c.name for c in firmware_image.inspect_image(APP, device=DEVICE)]  # the whole image has one
