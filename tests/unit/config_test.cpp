#include <gtest/gtest.h>

#include "vmm/config.hpp"

namespace popek::vmm {
namespace {

TEST(Config, DiskDefaultsAndOptions) {
    auto d = parse_disk("/tmp/a.img", 3);
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->path, "/tmp/a.img");
    EXPECT_FALSE(d->readonly);
    EXPECT_EQ(d->id, "disk3");
    EXPECT_EQ(d->queues, 1);
    auto e = parse_disk("/tmp/b.img,readonly=on,id=root-fs,engine=sync,queues=4", 0);
    ASSERT_TRUE(e.ok()) << e.error().message;
    EXPECT_TRUE(e->readonly);
    EXPECT_EQ(e->id, "root-fs");
    EXPECT_EQ(e->engine, "sync");
    EXPECT_EQ(e->queues, 4);
}

TEST(Config, DiskRejectsBadOptions) {
    for (const char* bad : {"", ",readonly=on", "/a,readonly=maybe", "/a,id=", "/a,id=has space",
                            "/a,id=012345678901234567890", "/a,queues=0", "/a,queues=17", "/a,queues=x",
                            "/a,engine=aio", "/a,colour=red"}) {
        auto d = parse_disk(bad, 0);
        EXPECT_FALSE(d.ok()) << bad;
        if (!d.ok()) {
            EXPECT_EQ(d.error().message.rfind("--disk", 0), 0u) << d.error().message;
        }
    }
}

TEST(Config, NetParsesTapAndMac) {
    auto n = parse_net("tap=tap0,mac=52:54:00:ab:cd:ef,id=uplink", 0);
    ASSERT_TRUE(n.ok()) << n.error().message;
    EXPECT_EQ(n->tap, "tap0");
    EXPECT_TRUE(n->mac_given);
    EXPECT_EQ(n->mac, (std::array<uint8_t, 6>{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}));
    EXPECT_EQ(n->id, "uplink");
    auto d = parse_net("tap=t1", 2);
    ASSERT_TRUE(d.ok());
    EXPECT_FALSE(d->mac_given);
    EXPECT_EQ(d->id, "net2");
}

TEST(Config, NetRejectsBadInput) {
    for (const char* bad : {"", "tap=", "mac=52:54:00:ab:cd:ef", "tap=a,mac=52:54:00:ab:cd", "tap=a,mac=53:54:00:ab:cd:ef",
                            "tap=a,mac=zz:54:00:ab:cd:ef", "tap=0123456789abcdef", "tap=a,speed=fast"})
        EXPECT_FALSE(parse_net(bad, 0).ok()) << bad;
}

TEST(Config, ConsoleAndSerial) {
    EXPECT_EQ(*parse_console("virtio"), ConsoleDevice::Virtio);
    EXPECT_EQ(*parse_console("serial"), ConsoleDevice::Serial);
    EXPECT_FALSE(parse_console("hdmi").ok());
    VmConfig cfg;
    EXPECT_TRUE(parse_serial("file:/tmp/x", cfg).ok());
    EXPECT_EQ(cfg.serial, SerialMode::File);
    EXPECT_EQ(cfg.serial_path, "/tmp/x");
    EXPECT_FALSE(parse_serial("file:", cfg).ok());
}

TEST(Config, ValidateRejectsDuplicateIdsAndBadSizes) {
    VmConfig cfg;
    cfg.kernel_path = "k";
    EXPECT_TRUE(validate_config(cfg).ok());
    cfg.disks.push_back(*parse_disk("/a,id=x", 0));
    cfg.nets.push_back(*parse_net("tap=t,id=x", 0));
    auto r = validate_config(cfg);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("'x'"), std::string::npos);
    cfg.nets.clear();
    cfg.cpus = 0;
    EXPECT_FALSE(validate_config(cfg).ok());
    cfg.cpus = 33;
    EXPECT_FALSE(validate_config(cfg).ok());
    cfg.cpus = 1;
    cfg.memory_bytes = 1 << 20;
    EXPECT_FALSE(validate_config(cfg).ok());
}

}  // namespace
}  // namespace popek::vmm
