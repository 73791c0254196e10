# Shared by the MicroPython drivers mp_alloc.py, mp_inflate.py and mp_workspace.py (imported from this
# folder, the script's own): just enough of esp32 (Partition, idf_heap_info) over one slot file, no
# allocation per call, and an image file as https.open's Response. The driver sets FilePartition.path (the slot file) and FilePartition.bases: where each slot
# starts in the file, None for a slot without one.
SLOT = 0x1D0000


class FilePartition:
    path = None
    bases = {"ota_0": None, "ota_1": 0}
    announce = False  # set_boot prints "set_boot <label>"

    def __init__(self, label, address):
        self.label, self.address = label, address
        self.base = FilePartition.bases[label]
        self.f = None if self.base is None else open(FilePartition.path, "r+b")

    def info(self):
        return (0, 0x10, self.address, SLOT, self.label, False)

    def ioctl(self, cmd, arg):
        if cmd == 5:
            return 4096
        if cmd == 6:
            self.f.seek(self.base + arg * 4096)
            self.f.write(b"\xff" * 4096)
            return 0

    def writeblocks(self, block, buf, offset=None):
        self.f.seek(self.base + block * 4096)
        self.f.write(buf)

    def readblocks(self, block, buf, offset=0):
        self.f.seek(self.base + block * 4096 + offset)
        self.f.readinto(buf)

    def get_next_update(self):
        return FilePartition("ota_1", 0x1E0000)

    def set_boot(self):
        self.booted = True
        if FilePartition.announce:
            print("set_boot", self.label)


class Esp32:
    HEAP_DATA = 4

    class Partition(FilePartition):
        BOOT = 0
        RUNNING = 1

        def __init__(self, id, block_size=4096):
            FilePartition.__init__(self, "ota_0", 0x10000)

    @staticmethod
    def idf_heap_info(caps):
        return [(245760, 191872, 180224, 176128)]


class FileResponse:
    # https.open's Response over an image file: readinto fills what it is given, as a socket does.
    status = 200
    range_start = None

    def __init__(self, path):
        self.f = open(path, "rb")
        self.f.seek(0, 2)
        self.total = self.length = self.f.tell()
        self.f.seek(0)

    def readinto(self, buf):
        return self.f.readinto(buf)

    def close(self):
        self.f.close()
