// The common configuration structure (virtio 1.2, 4.1.4.3) and the
// device_status state machine (2.1, 3.1.1).
#include <array>

#include "base/bytes.hpp"
#include "virtio/pci/virtio_pci.hpp"

namespace popek::virtio::pci {

namespace {

// struct virtio_pci_common_cfg
constexpr uint16_t kDeviceFeatureSelect = 0x00;
constexpr uint16_t kDeviceFeature = 0x04;
constexpr uint16_t kDriverFeatureSelect = 0x08;
constexpr uint16_t kDriverFeature = 0x0c;
constexpr uint16_t kConfigMsixVector = 0x10;
constexpr uint16_t kNumQueues = 0x12;
constexpr uint16_t kDeviceStatus = 0x14;
constexpr uint16_t kConfigGeneration = 0x15;
constexpr uint16_t kQueueSelect = 0x16;
constexpr uint16_t kQueueSize = 0x18;
constexpr uint16_t kQueueMsixVector = 0x1a;
constexpr uint16_t kQueueEnable = 0x1c;
constexpr uint16_t kQueueNotifyOff = 0x1e;
constexpr uint16_t kQueueDesc = 0x20;
constexpr uint16_t kQueueDriver = 0x28;
constexpr uint16_t kQueueDevice = 0x30;
constexpr uint16_t kQueueNotifyData = 0x38;
constexpr uint16_t kQueueReset = 0x3a;

struct Field {
    uint16_t offset;
    uint8_t size;
};
constexpr Field kFields[] = {
    {kDeviceFeatureSelect, 4}, {kDeviceFeature, 4}, {kDriverFeatureSelect, 4}, {kDriverFeature, 4},
    {kConfigMsixVector, 2},    {kNumQueues, 2},     {kDeviceStatus, 1},        {kConfigGeneration, 1},
    {kQueueSelect, 2},         {kQueueSize, 2},     {kQueueMsixVector, 2},     {kQueueEnable, 2},
    {kQueueNotifyOff, 2},      {kQueueDesc, 8},     {kQueueDriver, 8},         {kQueueDevice, 8},
    {kQueueNotifyData, 2},     {kQueueReset, 2},
};

constexpr uint8_t kDriverStatusBits =
    kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk | kStatusFailed;

// Replaces 32 bits (`half` 0: low, 1: high) or all 64 of a register.
uint64_t merge(uint64_t reg, uint64_t value, size_t size, uint64_t half) {
    if (size == 8) return value;
    const unsigned shift = static_cast<unsigned>(32 * half);
    return (reg & ~(uint64_t{0xffffffff} << shift)) | ((value & 0xffffffff) << shift);
}

}  // namespace

uint16_t VirtioPciDevice::valid_vector(uint64_t vector) const {
    // A vector the table does not have reads back NO_VECTOR (4.1.4.3.1).
    return vector < msix_->vector_count() ? static_cast<uint16_t>(vector) : kNoVector;
}

bool VirtioPciDevice::features_acceptable() const {
    return (driver_features_ & ~offered_) == 0 && (driver_features_ & kFeatureVersion1) != 0;
}

void VirtioPciDevice::reset_registers() {
    status_ = 0;
    isr_ = 0;
    device_feature_select_ = driver_feature_select_ = 0;
    driver_features_ = 0;
    queue_select_ = 0;
    queue_cfg_.assign(num_queues_, SplitQueue::State{});
    for (auto& q : queue_cfg_) q.size = queue_max_;  // reads the maximum until the driver shrinks it
    for (size_t i = 0; i <= num_queues_; ++i) vectors_[i].store(kNoVector);
    queues_.clear();
    activated_ = false;
    config_.set_intx_level(false);
}

void VirtioPciDevice::common_read(uint64_t offset, std::span<uint8_t> data) {
    if (offset >= kCommonCfgLength) return;  // bar_read zero-filled `data`
    std::array<uint8_t, kCommonCfgLength> img{};
    std::span<uint8_t> r(img);
    {
        std::lock_guard lock(mu_);
        base::store<uint32_t>(r, kDeviceFeatureSelect, device_feature_select_);
        if (device_feature_select_ < 2)
            base::store<uint32_t>(r, kDeviceFeature, static_cast<uint32_t>(offered_ >> (32 * device_feature_select_)));
        base::store<uint32_t>(r, kDriverFeatureSelect, driver_feature_select_);
        if (driver_feature_select_ < 2)
            base::store<uint32_t>(r, kDriverFeature,
                                  static_cast<uint32_t>(driver_features_ >> (32 * driver_feature_select_)));
        base::store<uint16_t>(r, kConfigMsixVector, vectors_[num_queues_].load());
        base::store<uint16_t>(r, kNumQueues, num_queues_);
        base::store<uint8_t>(r, kDeviceStatus, status_);
        base::store<uint8_t>(r, kConfigGeneration, generation_);
        base::store<uint16_t>(r, kQueueSelect, queue_select_);
        if (queue_select_ < num_queues_) {  // an absent queue reads all zeros (size 0: "not available")
            const SplitQueue::State& q = queue_cfg_[queue_select_];
            base::store<uint16_t>(r, kQueueSize, q.size);
            base::store<uint16_t>(r, kQueueMsixVector, vectors_[queue_select_].load());
            base::store<uint16_t>(r, kQueueEnable, q.ready ? 1 : 0);
            base::store<uint16_t>(r, kQueueNotifyOff, queue_select_);
            base::store<uint64_t>(r, kQueueDesc, q.desc_addr);
            base::store<uint64_t>(r, kQueueDriver, q.avail_addr);
            base::store<uint64_t>(r, kQueueDevice, q.used_addr);
        }
    }
    for (size_t i = 0; i < data.size() && offset + i < img.size(); ++i) data[i] = img[offset + i];
}

void VirtioPciDevice::common_write(uint64_t offset, std::span<const uint8_t> data) {
    // Accesses use the field's width; 64-bit fields may also be written as
    // two aligned 32-bit halves. Anything else is ignored.
    const Field* field = nullptr;
    for (const Field& f : kFields)
        if (offset >= f.offset && offset < f.offset + f.size) field = &f;
    if (field == nullptr) return;
    const uint64_t within = offset - field->offset;
    const bool whole = within == 0 && data.size() == field->size;
    const bool half = field->size == 8 && data.size() == 4 && within % 4 == 0;
    if (!whole && !half) return;
    const uint64_t value = base::load_le(data);
    if (field->offset == kDeviceStatus) {
        write_status(static_cast<uint8_t>(value));  // takes its own locks
        return;
    }

    std::lock_guard lock(mu_);
    const bool driver_ok = (status_ & kStatusDriverOk) != 0;
    SplitQueue::State* q = queue_select_ < num_queues_ ? &queue_cfg_[queue_select_] : nullptr;
    // Queue fields are the driver's until it enables the queue or the device.
    const bool queue_writable = q != nullptr && !q->ready && !driver_ok;
    switch (field->offset) {
        case kDeviceFeatureSelect: device_feature_select_ = static_cast<uint32_t>(value); break;
        case kDriverFeatureSelect: driver_feature_select_ = static_cast<uint32_t>(value); break;
        case kDriverFeature:
            if ((status_ & kStatusFeaturesOk) == 0 && driver_feature_select_ < 2)
                driver_features_ = merge(driver_features_, value, 4, driver_feature_select_);
            break;
        case kConfigMsixVector: vectors_[num_queues_].store(valid_vector(value)); break;
        case kQueueSelect: queue_select_ = static_cast<uint16_t>(value); break;
        case kQueueSize:
            // Split queues need a power of two; a bad size is ignored.
            if (queue_writable && value != 0 && value <= queue_max_ && (value & (value - 1)) == 0)
                q->size = static_cast<uint16_t>(value);
            break;
        case kQueueMsixVector:
            if (q != nullptr) vectors_[queue_select_].store(valid_vector(value));
            break;
        case kQueueEnable:
            if (queue_writable && value == 1) q->ready = true;  // 0 is not for the driver to write
            break;
        case kQueueDesc:
            if (queue_writable) q->desc_addr = merge(q->desc_addr, value, data.size(), within / 4);
            break;
        case kQueueDriver:
            if (queue_writable) q->avail_addr = merge(q->avail_addr, value, data.size(), within / 4);
            break;
        case kQueueDevice:
            if (queue_writable) q->used_addr = merge(q->used_addr, value, data.size(), within / 4);
            break;
        default: break;  // read-only, or a feature popek does not offer (queue_reset)
    }
}

void VirtioPciDevice::write_status(uint8_t value) {
    std::lock_guard transition(status_mu_);
    if (value == 0) {
        reset_device();
        return;
    }
    uint8_t cur;
    bool acceptable;
    uint64_t features;
    {
        std::lock_guard lock(mu_);
        cur = static_cast<uint8_t>(status_ & ~kStatusNeedsReset);  // NEEDS_RESET is the device's bit
        acceptable = features_acceptable();
        features = driver_features_;
    }
    const uint8_t want = value & kDriverStatusBits;
    if ((cur & ~want) != 0) return;  // the driver only adds bits; writing 0 resets
    const uint8_t added = want & ~cur;
    uint8_t next = cur;
    if (added & kStatusAcknowledge) next |= kStatusAcknowledge;
    if ((added & kStatusDriver) && (next & kStatusAcknowledge)) next |= kStatusDriver;
    // FEATURES_OK only for a subset of what was offered that includes
    // VERSION_1 (no legacy interface here); otherwise it reads back clear.
    if ((added & kStatusFeaturesOk) && (next & kStatusDriver) && acceptable) next |= kStatusFeaturesOk;
    if (added & kStatusFailed) next |= kStatusFailed;
    const bool go = (added & kStatusDriverOk) && (next & kStatusFeaturesOk) && !(next & kStatusFailed);
    if (!go) {
        std::lock_guard lock(mu_);
        status_ = static_cast<uint8_t>(next | (status_ & kStatusNeedsReset));
        return;
    }

    auto activated = activate(features);
    {
        std::lock_guard lock(mu_);
        status_ = static_cast<uint8_t>(next | kStatusDriverOk | (status_ & kStatusNeedsReset) |
                                       (activated.ok() ? 0 : kStatusNeedsReset));
        if (!activated.ok()) failure_ = activated.error().message;
    }
    if (!activated.ok()) signal_config();
}

}  // namespace popek::virtio::pci
