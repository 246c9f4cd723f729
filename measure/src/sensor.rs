//! # Sensors: NVML sampled in a background thread
//!
//! [`Sensor`] is what the sampler reads: [`NvmlSensor`] on a real GPU,
//! [`FakeSensor`] (a script of readings) in tests. [`Sampler`] polls a sensor
//! every few milliseconds while a benchmark runs; [`SensorSummary`] is what
//! results keep. Energy comes from the board's energy counter read at the
//! start and end of a window of seconds ([`energy_window`]), not from short
//! kernels.
//!
//! Power is the instantaneous field (`NVML_FI_DEV_POWER_INSTANT`) where the
//! driver offers it, else the averaged reading; [`PowerSource`] records
//! which. A sample taken while the clocks were limited by power or
//! temperature is counted and its reasons are listed, so a throttled
//! benchmark is visible in the results instead of silently averaged in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use serde::{Deserialize, Serialize};

/// NVML's field id of instantaneous power (mW).
const FIELD_POWER_INSTANT: u32 = 186;

/// Which power reading a sensor reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSource {
    /// `NVML_FI_DEV_POWER_INSTANT`.
    Instant,
    /// `nvmlDeviceGetPowerUsage` (averaged by the driver over about a second).
    Average,
    /// No power reading.
    None,
}

/// One poll of a sensor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// Seconds since the sampler started.
    pub t: f64,
    /// Board power, watts.
    pub power_w: Option<f64>,
    /// GPU temperature, °C.
    pub temperature_c: Option<u32>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub mem_clock_mhz: Option<u32>,
    /// Active clock limits that count as throttling (power or thermal).
    pub throttle: Vec<String>,
    /// Device memory in use, bytes.
    pub memory_used_bytes: Option<u64>,
    /// GPU utilization, percent.
    pub utilization_pct: Option<u32>,
}

/// A source of readings.
pub trait Sensor: Send {
    /// Takes a reading (its `t` is set by the sampler).
    fn read(&mut self) -> SensorReading;
    /// Which power reading `read` reports.
    fn power_source(&self) -> PowerSource;
    /// The board's energy counter, millijoules since driver load.
    fn energy_mj(&mut self) -> Option<u64>;
}

/// NVML on one device, found by its UUID: NVML numbers devices by PCI bus,
/// CUDA fastest-first, and `CUDA_VISIBLE_DEVICES` only renumbers CUDA's, so
/// an index could read another board's power.
pub struct NvmlSensor {
    nvml: Nvml,
    uuid: String,
    source: PowerSource,
}

impl std::fmt::Debug for NvmlSensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSensor").field("uuid", &self.uuid).field("source", &self.source).finish()
    }
}

fn instant_power(sample: Option<&Result<FieldValueSample, nvml_wrapper::error::NvmlError>>) -> Option<f64> {
    match sample?.as_ref().ok()?.value.as_ref().ok()? {
        SampleValue::U32(v) => Some(*v as f64 / 1e3),
        SampleValue::U64(v) => Some(*v as f64 / 1e3),
        SampleValue::I64(v) => Some(*v as f64 / 1e3),
        SampleValue::F64(v) => Some(*v / 1e3),
    }
}

impl NvmlSensor {
    /// Opens NVML for the device with this UUID (as
    /// [`trinity::cuda::CudaBackend::uuid`] gives it); `None` without a driver
    /// or such a device. A field the board does not report only leaves that
    /// field empty in each reading.
    pub fn open(uuid: &str) -> Option<Self> {
        let nvml = Nvml::init().ok()?;
        let dev = nvml.device_by_uuid(uuid).ok()?;
        let instant = dev.field_values_for(&[FieldId(FIELD_POWER_INSTANT)]).ok().and_then(|v| instant_power(v.first()));
        let source = if instant.is_some() {
            PowerSource::Instant
        } else if dev.power_usage().is_ok() {
            PowerSource::Average
        } else {
            PowerSource::None
        };
        Some(NvmlSensor { nvml, uuid: uuid.to_owned(), source })
    }
}

/// The throttle reasons that limit clocks because of power or temperature.
fn limiting(reasons: ThrottleReasons) -> Vec<String> {
    let named = [
        (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
        (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
        (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
        (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
        (ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
    ];
    named.iter().filter(|(flag, _)| reasons.contains(*flag)).map(|(_, n)| (*n).to_owned()).collect()
}

impl Sensor for NvmlSensor {
    fn read(&mut self) -> SensorReading {
        let Ok(dev) = self.nvml.device_by_uuid(self.uuid.as_str()) else {
            return SensorReading::default();
        };
        let power_w = match self.source {
            PowerSource::Instant => {
                dev.field_values_for(&[FieldId(FIELD_POWER_INSTANT)]).ok().and_then(|v| instant_power(v.first()))
            }
            PowerSource::Average => dev.power_usage().ok().map(|mw| mw as f64 / 1e3),
            PowerSource::None => None,
        };
        SensorReading {
            t: 0.0,
            power_w,
            temperature_c: dev.temperature(TemperatureSensor::Gpu).ok(),
            sm_clock_mhz: dev.clock_info(Clock::SM).ok(),
            mem_clock_mhz: dev.clock_info(Clock::Memory).ok(),
            throttle: dev.current_throttle_reasons().map(limiting).unwrap_or_default(),
            memory_used_bytes: dev.memory_info().ok().map(|m| m.used),
            utilization_pct: dev.utilization_rates().ok().map(|u| u.gpu),
        }
    }

    fn power_source(&self) -> PowerSource {
        self.source
    }

    fn energy_mj(&mut self) -> Option<u64> {
        self.nvml.device_by_uuid(self.uuid.as_str()).ok()?.total_energy_consumption().ok()
    }
}

/// A scripted sensor for tests: returns its readings in turn (the last one
/// repeats) and its energy counter values in turn.
#[derive(Debug, Clone)]
pub struct FakeSensor {
    /// Readings to return.
    pub readings: Vec<SensorReading>,
    /// Energy counter values (mJ) to return.
    pub energy: Vec<u64>,
    /// Power source to report.
    pub source: PowerSource,
    next: usize,
    next_energy: usize,
}

impl FakeSensor {
    /// A script.
    pub fn new(readings: Vec<SensorReading>, energy: Vec<u64>, source: PowerSource) -> Self {
        FakeSensor { readings, energy, source, next: 0, next_energy: 0 }
    }
}

impl Sensor for FakeSensor {
    fn read(&mut self) -> SensorReading {
        let r = self.readings[self.next.min(self.readings.len().saturating_sub(1))].clone();
        self.next += 1;
        r
    }
    fn power_source(&self) -> PowerSource {
        self.source
    }
    fn energy_mj(&mut self) -> Option<u64> {
        let e = self.energy.get(self.next_energy).copied();
        self.next_energy += 1;
        e
    }
}

/// What results keep of a sampling window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SensorSummary {
    /// Readings taken.
    pub samples: usize,
    /// Which power reading was used.
    pub power_source: Option<PowerSource>,
    /// Mean power over all readings, watts.
    pub mean_power_w: Option<f64>,
    /// Mean power over readings that were not throttled, watts.
    pub mean_power_unthrottled_w: Option<f64>,
    /// Peak power, watts.
    pub peak_power_w: Option<f64>,
    /// Peak temperature, °C.
    pub peak_temperature_c: Option<u32>,
    /// Mean SM clock, MHz.
    pub mean_sm_clock_mhz: Option<f64>,
    /// Lowest SM clock seen, MHz.
    pub min_sm_clock_mhz: Option<u32>,
    /// Mean memory clock, MHz.
    pub mean_mem_clock_mhz: Option<f64>,
    /// Readings taken while power or temperature limited the clocks.
    pub throttled_samples: usize,
    /// Every limiting reason seen.
    pub throttle_reasons: Vec<String>,
    /// Peak device memory in use, bytes.
    pub peak_memory_used_bytes: Option<u64>,
    /// Mean GPU utilization, percent.
    pub mean_utilization_pct: Option<f64>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

impl SensorSummary {
    /// Summarizes readings.
    pub fn of(readings: &[SensorReading], source: PowerSource) -> Self {
        let mut reasons: Vec<String> = readings.iter().flat_map(|r| r.throttle.iter().cloned()).collect();
        reasons.sort();
        reasons.dedup();
        SensorSummary {
            samples: readings.len(),
            power_source: Some(source),
            mean_power_w: mean(readings.iter().filter_map(|r| r.power_w)),
            mean_power_unthrottled_w: mean(readings.iter().filter(|r| r.throttle.is_empty()).filter_map(|r| r.power_w)),
            peak_power_w: readings.iter().filter_map(|r| r.power_w).reduce(f64::max),
            peak_temperature_c: readings.iter().filter_map(|r| r.temperature_c).max(),
            mean_sm_clock_mhz: mean(readings.iter().filter_map(|r| r.sm_clock_mhz.map(f64::from))),
            min_sm_clock_mhz: readings.iter().filter_map(|r| r.sm_clock_mhz).min(),
            mean_mem_clock_mhz: mean(readings.iter().filter_map(|r| r.mem_clock_mhz.map(f64::from))),
            throttled_samples: readings.iter().filter(|r| !r.throttle.is_empty()).count(),
            throttle_reasons: reasons,
            peak_memory_used_bytes: readings.iter().filter_map(|r| r.memory_used_bytes).max(),
            mean_utilization_pct: mean(readings.iter().filter_map(|r| r.utilization_pct.map(f64::from))),
        }
    }

    /// Whether any reading was throttled.
    pub fn throttled(&self) -> bool {
        self.throttled_samples > 0
    }
}

/// A sensor polled in a background thread until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Vec<SensorReading>, Box<dyn Sensor>)>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

impl Sampler {
    /// Starts polling `sensor` every `interval` (one reading immediately).
    pub fn start(mut sensor: Box<dyn Sensor>, interval: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut readings = Vec::new();
            loop {
                let mut r = sensor.read();
                r.t = start.elapsed().as_secs_f64();
                readings.push(r);
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(interval);
            }
            (readings, sensor)
        });
        Sampler { stop, handle }
    }

    /// Stops polling; returns the readings and the sensor.
    pub fn finish(self) -> (Vec<SensorReading>, Box<dyn Sensor>) {
        self.stop.store(true, Ordering::Relaxed);
        // The sampling thread cannot panic (readings never fail, they are Options).
        self.handle.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// Memory in use on the GPU with this UUID (NVML; the whole device, other
/// processes included); `None` without a driver or such a device.
pub fn gpu_memory_used(uuid: &str) -> Option<u64> {
    let nvml = Nvml::init().ok()?;
    Some(nvml.device_by_uuid(uuid).ok()?.memory_info().ok()?.used)
}

/// Energy over a window in which a kernel ran repeatedly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnergyWindow {
    /// Length of the window, seconds.
    pub seconds: f64,
    /// Energy the counter advanced, joules.
    pub joules: f64,
    /// Iterations run in the window.
    pub iterations: u64,
}

impl EnergyWindow {
    /// Joules per iteration.
    pub fn joules_per_iteration(&self) -> f64 {
        self.joules / self.iterations as f64
    }
    /// Mean power over the window, watts.
    pub fn mean_power_w(&self) -> f64 {
        self.joules / self.seconds
    }
}

/// Runs `batch` (which returns how many iterations it ran and must wait for
/// them to finish) until `min_window` has passed, reading the energy counter
/// before and after; `None` when the sensor has no counter.
pub fn energy_window<E>(
    sensor: &mut dyn Sensor,
    min_window: Duration,
    mut batch: impl FnMut() -> Result<u64, E>,
) -> Result<Option<EnergyWindow>, E> {
    let Some(before) = sensor.energy_mj() else {
        return Ok(None);
    };
    let start = Instant::now();
    let mut iterations = 0;
    while iterations == 0 || start.elapsed() < min_window {
        iterations += batch()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(sensor.energy_mj().map(|after| EnergyWindow {
        seconds,
        joules: after.saturating_sub(before) as f64 / 1e3,
        iterations,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(power: f64, temp: u32, clock: u32, throttle: &[&str]) -> SensorReading {
        SensorReading {
            power_w: Some(power),
            temperature_c: Some(temp),
            sm_clock_mhz: Some(clock),
            throttle: throttle.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn throttled_readings_are_flagged_not_averaged_away() {
        let rs = [
            reading(300.0, 60, 1980, &[]),
            reading(700.0, 85, 1500, &["sw_power_cap"]),
            reading(310.0, 62, 1980, &[]),
            reading(690.0, 88, 1400, &["hw_thermal_slowdown", "sw_power_cap"]),
        ];
        let s = SensorSummary::of(&rs, PowerSource::Instant);
        assert_eq!(s.samples, 4);
        assert_eq!(s.throttled_samples, 2);
        assert!(s.throttled());
        assert_eq!(s.throttle_reasons, vec!["hw_thermal_slowdown", "sw_power_cap"]);
        assert_eq!(s.mean_power_w, Some(500.0));
        assert_eq!(s.mean_power_unthrottled_w, Some(305.0));
        assert_eq!((s.peak_power_w, s.peak_temperature_c, s.min_sm_clock_mhz), (Some(700.0), Some(88), Some(1400)));
    }

    #[test]
    fn energy_window_arithmetic() {
        // 1.5 J per iteration: the counter advances 6000 mJ over 4 iterations.
        let mut fake = FakeSensor::new(vec![SensorReading::default()], vec![10_000, 16_000], PowerSource::Average);
        let w = energy_window::<()>(&mut fake, Duration::ZERO, || Ok(4)).unwrap().unwrap();
        assert_eq!((w.iterations, w.joules), (4, 6.0));
        assert_eq!(w.joules_per_iteration(), 1.5);
        let mut none = FakeSensor::new(vec![SensorReading::default()], vec![], PowerSource::None);
        assert_eq!(energy_window::<()>(&mut none, Duration::ZERO, || Ok(1)).unwrap(), None);
    }

    #[test]
    fn the_sampler_polls_until_finished() {
        let fake = FakeSensor::new(vec![reading(100.0, 40, 1000, &[])], vec![], PowerSource::Instant);
        let s = Sampler::start(Box::new(fake), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        let (readings, sensor) = s.finish();
        assert!(readings.len() >= 2, "{}", readings.len());
        assert!(readings.windows(2).all(|w| w[0].t <= w[1].t));
        assert_eq!(sensor.power_source(), PowerSource::Instant);
    }
}
