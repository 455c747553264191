// The snapshot store's logic that needs neither root nor a file system with
// reflinks: names, records, keeping a recorded snapshot, leftovers, and the
// snapshot device's name and identity. Taking snapshots on xfs and btrfs is
// tested in tests/integration/test_snapshot_source.sh.
#include "block/snapshot_source.h"
#include "common/endian.h"
#include "common/error.h"
#include "memory_device.h"

#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <gtest/gtest.h>
#include <regex>
#include <string>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace p2vfs {
namespace {

// 2026-11-24T21:31:36.123456789Z
constexpr int64_t when = 1795555896LL * 1000000000 + 123456789;

class SnapshotStoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/p2vfs-unit-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        snaps_ = dir_ + "/snaps";
    }
    void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

    std::string write(const std::string& path, const std::string& bytes) {
        std::ofstream(path, std::ios::binary) << bytes;
        return path;
    }
    bool exists(const std::string& path) {
        struct stat st;
        return ::stat(path.c_str(), &st) == 0;
    }
    uint64_t inode(const std::string& path) {
        struct stat st {};
        EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
        return st.st_ino;
    }

    // A snapshot as an earlier run would have left it: the file and its record.
    SnapshotRecord plant_snapshot(const std::string& origin, const std::string& bytes) {
        ::mkdir(snaps_.c_str(), 0700);
        const std::string stem = snapshot_stem(origin);
        SnapshotRecord r;
        r.kind = "reflink";
        r.origin = origin;
        struct stat st {};
        EXPECT_EQ(::stat(origin.c_str(), &st), 0);
        r.origin_device = st.st_dev;
        r.origin_inode = st.st_ino;
        r.path = write(snaps_ + "/" + stem + ".snap", bytes);
        r.snapshot_inode = inode(r.path);
        r.taken_ns = when;
        r.size = bytes.size();
        write(snaps_ + "/" + stem + ".meta", snapshot_record_text(r, snaps_));
        return r;
    }

    std::string error_of(const std::string& origin, const std::string& dir) {
        try {
            keep_or_take_snapshot(origin, dir);
        } catch (const Error& e) {
            return e.what();
        }
        return "(no error)";
    }

    std::string dir_;
    std::string snaps_;
};

TEST(SnapshotStem, IsTheBaseNameAndAHashOfThePath) {
    const std::string a = snapshot_stem("/srv/images/pc1.img");
    EXPECT_TRUE(std::regex_match(a, std::regex("pc1\\.img-[0-9a-f]{16}"))) << a;
    EXPECT_EQ(a, snapshot_stem("/srv/images/pc1.img"));
    EXPECT_NE(a, snapshot_stem("/srv/other/pc1.img"));
    EXPECT_TRUE(
        std::regex_match(snapshot_stem("/x/a b;c\n.img"), std::regex("a_b_c_\\.img-[0-9a-f]{16}")));
    EXPECT_EQ(snapshot_stem("/x/" + std::string(300, 'n')).size(), 100u + 1 + 16);
}

TEST(SnapshotTime, IsUtcWithOrWithoutNanoseconds) {
    EXPECT_EQ(snapshot_time_text(when), "2026-11-24T21:31:36Z");
    EXPECT_EQ(snapshot_time_text(when, true), "2026-11-24T21:31:36.123456789Z");
}

TEST(SnapshotRecordText, RoundTripsWithTheSnapshotNamedRelatively) {
    SnapshotRecord r;
    r.kind = "reflink";
    r.origin = "/srv/pc1.img";
    r.origin_device = makedev(253, 3);
    r.origin_inode = 131;
    r.path = "/var/lib/p2vfs/snapshots/pc1.img-0123456789abcdef.snap";
    r.snapshot_inode = 4242;
    r.taken_ns = when;
    r.size = 1 << 30;
    const std::string text = snapshot_record_text(r, "/var/lib/p2vfs/snapshots");
    EXPECT_EQ(text, "# p2vfs snapshot record: the snapshot is the origin as it was when taken.\n"
                    "kind=reflink\n"
                    "origin=/srv/pc1.img\n"
                    "origin-device=253:3\n"
                    "origin-inode=131\n"
                    "snapshot=pc1.img-0123456789abcdef.snap\n"
                    "snapshot-inode=4242\n"
                    "taken=2026-11-24T21:31:36.123456789Z\n"
                    "size=1073741824\n");
    // The directory moved: the snapshot is found beside the record.
    const SnapshotRecord back = parse_snapshot_record(text, "x.meta", "/moved");
    EXPECT_EQ(back.kind, r.kind);
    EXPECT_EQ(back.origin, r.origin);
    EXPECT_EQ(back.origin_device, r.origin_device);
    EXPECT_EQ(back.origin_inode, r.origin_inode);
    EXPECT_EQ(back.path, "/moved/pc1.img-0123456789abcdef.snap");
    EXPECT_EQ(back.snapshot_inode, r.snapshot_inode);
    EXPECT_EQ(back.taken_ns, r.taken_ns);
    EXPECT_EQ(back.size, r.size);
}

TEST(SnapshotRecordText, DamageNamesTheFileAndTheLine) {
    const std::string good = "kind=reflink\norigin=/a\norigin-device=8:1\norigin-inode=1\n"
                             "snapshot=a.snap\nsnapshot-inode=2\n"
                             "taken=2026-11-24T21:31:36.000000000Z\nsize=10\n";
    EXPECT_NO_THROW(parse_snapshot_record(good, "r.meta", "/d"));
    const auto error = [](const std::string& text) -> std::string {
        try {
            parse_snapshot_record(text, "/d/r.meta", "/d");
        } catch (const Error& e) {
            return e.what();
        }
        return "(no error)";
    };
    EXPECT_EQ(error("kind=reflink\n"), "/d/r.meta: no 'origin' line; the record is damaged: "
                                       "delete it and its snapshot to take a new one");
    EXPECT_EQ(error(std::regex_replace(good, std::regex("\\.000000000Z"), "Z")),
              "/d/r.meta: 'taken' is not a time such as 2026-11-24T21:31:36.000000000Z: "
              "'2026-11-24T21:31:36Z'; the record is damaged: delete it and its snapshot to take "
              "a new one");
    EXPECT_EQ(error(std::regex_replace(good, std::regex("size=10"), "size=ten")),
              "/d/r.meta: 'size' is not a number: 'ten'; the record is damaged: delete it and its "
              "snapshot to take a new one");
    EXPECT_EQ(error("kind=reflink\ngarbage\n"), "/d/r.meta: line 2: expected KEY=VALUE, got "
                                                "'garbage'");
}

TEST_F(SnapshotStoreTest, ARecordedSnapshotIsKept) {
    const std::string origin = write(dir_ + "/pc1.img", "live bytes, changed since");
    const SnapshotRecord planted = plant_snapshot(origin, "bytes as they were");
    const SnapshotRecord r = keep_or_take_snapshot(origin, snaps_);
    EXPECT_TRUE(r.kept);
    EXPECT_EQ(r.path, planted.path);
    EXPECT_EQ(r.taken_ns, when);
    EXPECT_EQ(r.size, planted.size);
}

TEST_F(SnapshotStoreTest, ASnapshotNotAsRecordedIsRefused) {
    const std::string origin = write(dir_ + "/pc1.img", "live");
    const SnapshotRecord planted = plant_snapshot(origin, "old bytes");
    write(planted.path, "old bytes, and more written to the snapshot");
    EXPECT_EQ(error_of(origin, snaps_),
              planted.path + ": the snapshot of " + origin +
                  " taken 2026-11-24T21:31:36Z is not as its record says (9 bytes, inode " +
                  std::to_string(planted.snapshot_inode) + "; found 43 bytes, inode " +
                  std::to_string(planted.snapshot_inode) +
                  "): it was replaced or written; delete it to take a new snapshot");
}

TEST_F(SnapshotStoreTest, ARecordOfAnotherOriginIsRefused) {
    const std::string origin = write(dir_ + "/pc1.img", "live");
    const SnapshotRecord planted = plant_snapshot(origin, "old");
    const std::string meta = snaps_ + "/" + snapshot_stem(origin) + ".meta";
    SnapshotRecord other = planted;
    other.origin = "/elsewhere/pc1.img";
    write(meta, snapshot_record_text(other, snaps_));
    EXPECT_EQ(error_of(origin, snaps_), meta + ": is the record of a snapshot of " +
                                            "/elsewhere/pc1.img, not of " + origin +
                                            "; give another --snapshot-dir");
}

// Temporaries of an interrupted take go first; then, with no record, a
// snapshot left before its record was written is discarded and a new one
// taken — which, on a file system without reflinks, fails and leaves
// nothing behind.
TEST_F(SnapshotStoreTest, LeftoversAreRemovedBeforeTaking) {
    const std::string origin = write(dir_ + "/pc1.img", "live bytes");
    ::mkdir(snaps_.c_str(), 0700);
    const std::string stem = snapshot_stem(origin);
    const std::string unrecorded = write(snaps_ + "/" + stem + ".snap", "never recorded");
    const uint64_t unrecorded_inode = inode(unrecorded);
    write(snaps_ + "/" + stem + ".snap.tmp", "half a clone");
    write(snaps_ + "/other-0000000000000000.meta.tmp", "half a record");
    write(snaps_ + "/notes.txt", "not ours");

    std::string error;
    try {
        const SnapshotRecord r = keep_or_take_snapshot(origin, snaps_);
        EXPECT_FALSE(r.kept);
        EXPECT_EQ(r.size, 10u);
        EXPECT_TRUE(exists(snaps_ + "/" + stem + ".meta"));
    } catch (const Error& e) {
        error = e.what();
    }
    EXPECT_FALSE(exists(snaps_ + "/" + stem + ".snap.tmp"));
    EXPECT_FALSE(exists(snaps_ + "/other-0000000000000000.meta.tmp"));
    EXPECT_TRUE(exists(snaps_ + "/notes.txt"));
    if (error.empty()) {
        EXPECT_NE(inode(unrecorded), unrecorded_inode) << "the unrecorded snapshot was kept";
    } else {
        EXPECT_NE(error.find("does not support reflinks (FICLONE); btrfs or xfs with reflink=1 do"),
                  std::string::npos)
            << error;
        EXPECT_FALSE(exists(unrecorded));
        EXPECT_FALSE(exists(snaps_ + "/" + stem + ".meta"));
    }
}

TEST_F(SnapshotStoreTest, TheDirectoryIsMadeMode0700) {
    const std::string origin = write(dir_ + "/pc1.img", "live");
    const std::string deep = dir_ + "/state/snapshots";
    try {
        keep_or_take_snapshot(origin, deep);
    } catch (const Error&) {
        // no reflinks here: the directory is made all the same
    }
    struct stat st {};
    ASSERT_EQ(::stat(deep.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
}

TEST_F(SnapshotStoreTest, ErrorsNameTheReason) {
    EXPECT_EQ(error_of(dir_ + "/pc1.img", ""),
              "snapshot:" + dir_ +
                  "/pc1.img: snapshot sources need a snapshot directory "
                  "(--snapshot-dir)");
    EXPECT_EQ(error_of(dir_ + "/gone.img", snaps_),
              dir_ + "/gone.img: cannot take a snapshot: No such file or directory");
    EXPECT_EQ(error_of("/dev/null", snaps_),
              "/dev/null: cannot take a snapshot: not a regular file (a snapshot source is an "
              "image file)");
    EXPECT_FALSE(exists(snaps_)) << "made a snapshot directory for an origin it cannot snapshot";
}

TEST(SnapshotSourceDevice, SaysItIsASnapshotAndHasAnIdentityOfItsOwn) {
    auto memory = std::make_shared<test::MemoryDevice>(1 << 20);
    SnapshotRecord r;
    r.kind = "reflink";
    r.origin = "/srv/pc1.img";
    r.path = "/snaps/pc1.img-0123456789abcdef.snap";
    r.snapshot_inode = 77;
    r.taken_ns = when;
    r.size = 1 << 20;
    const SnapshotSource raw(memory, r, "raw");
    EXPECT_EQ(raw.name(), "snapshot of /srv/pc1.img taken 2026-11-24T21:31:36Z");
    EXPECT_EQ(raw.identity(), "snapshot:reflink:/srv/pc1.img|taken=2026-11-24T21:31:36.123456789Z"
                              "|inode=77|memory:1048576");
    EXPECT_EQ(raw.size(), 1u << 20);
    EXPECT_EQ(SnapshotSource(memory, r, "qcow2").name(),
              "snapshot of /srv/pc1.img (qcow2 image) taken 2026-11-24T21:31:36Z");
    // Taken again (another time, another file): another identity.
    SnapshotRecord again = r;
    again.taken_ns += 1;
    EXPECT_NE(SnapshotSource(memory, again, "raw").identity(), raw.identity());
}

TEST_F(SnapshotStoreTest, ImagesThatPointElsewhereAreRefused) {
    // A qcow2 header (qcow2.txt) with its backing file name at 0x200.
    const auto qcow2 = [&](const std::string& backing) {
        std::string h(1024, '\0');
        h.replace(0, 4, "QFI\xfb");
        store_be<uint32_t>(h.data() + 4, 3);
        store_be<uint64_t>(h.data() + 8, 0x200);
        store_be<uint32_t>(h.data() + 16, static_cast<uint32_t>(backing.size()));
        h.replace(0x200, backing.size(), backing);
        return write(dir_ + "/img.qcow2", h);
    };
    const std::string rel = qcow2("base.qcow2");
    try {
        check_snapshot_image("/srv/top.qcow2", rel, "qcow2");
        ADD_FAILURE() << "a relative backing file was accepted";
    } catch (const UnsupportedError& e) {
        EXPECT_EQ(std::string(e.what()),
                  "/srv/top.qcow2: its backing file 'base.qcow2' is named relative to the "
                  "image's directory, which a snapshot kept elsewhere cannot follow; name it "
                  "absolutely (qemu-img rebase -u -b /ABSOLUTE/PATH -F FORMAT IMAGE) or snapshot "
                  "a self-contained image (qemu-img convert); then delete the snapshot " +
                      rel + " to take a new one");
    }
    EXPECT_EQ(check_snapshot_image("/srv/top.qcow2", qcow2("/srv/base.qcow2"), "qcow2"),
              "/srv/base.qcow2");
    EXPECT_EQ(check_snapshot_image("/srv/top.qcow2", qcow2(""), "qcow2"), std::nullopt);
    const std::string descriptor =
        write(dir_ + "/d.vmdk", "# Disk DescriptorFile\nRW 2048 FLAT \"d-flat.vmdk\" 0\n");
    EXPECT_THROW(check_snapshot_image(descriptor, descriptor, "vmdk"), UnsupportedError);
    EXPECT_EQ(check_snapshot_image(descriptor, descriptor, "raw"), std::nullopt);
}

} // namespace
} // namespace p2vfs
