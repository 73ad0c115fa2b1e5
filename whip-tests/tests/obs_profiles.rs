//! The OBS profiles in `obs-profiles/` must keep meeting the gateway's requirements. Every folder in
//! `obs-profiles/` is a profile (a new one is checked without touching this file); each is parsed the
//! way OBS reads it (`basic.ini` as INI, `service.json` and `streamEncoder.json` as JSON) and every
//! problem is reported as `obs-profiles/<profile>/<file>: <key>: <what is wrong>`.
//!
//! What is checked, and why (see `obs-profiles/README.md`):
//! - video codec the gateway forwards (H264, H265, AV1 — by the OBS encoder id), Opus audio at 48 kHz;
//! - no B-frames, through the key that encoder reads (`bf`, `bframes`, x264's `x264opts`/`tune`);
//! - a keyframe interval (`keyint_sec`) of 1–2 s: OBS ignores keyframe requests, so it bounds how far
//!   behind live a new viewer starts and how long a loss-induced freeze lasts;
//! - CBR and low-latency tuning where the encoder has such a knob;
//! - service `whip_custom`/`WHIP`, server `http(s)://…/whip/<stream>`, the token placeholder;
//! - OBS 32 simulcast: `[Stream1] WHIPSimulcastTotalLayers` (and `WHIPSimulcast`) in `basic.ini`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The bearer token every profile ships with; the README tells users to replace or clear it.
const TOKEN_PLACEHOLDER: &str = "YOUR-TOKEN";
/// Files OBS's Profile → Import copies; the first three must be present here.
const REQUIRED_FILES: [&str; 3] = ["basic.ini", "service.json", "streamEncoder.json"];

fn profiles_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("obs-profiles")
}

/// Every directory directly under `obs-profiles/`, sorted.
fn discover_profiles(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .map(|entry| entry.expect("read_dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_profile_meets_the_gateway_requirements() {
    let root = profiles_root();
    let profiles = discover_profiles(&root);
    assert!(
        !profiles.is_empty(),
        "no profile folders found in {}",
        root.display()
    );

    let readme = fs::read_to_string(root.join("README.md")).unwrap_or_default();
    let mut errors = Vec::new();
    for dir in &profiles {
        let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
        errors.extend(check_profile(dir));
        if !readme.contains(&format!("`{profile}`")) {
            errors.push(format!(
                "obs-profiles/README.md: does not mention profile `{profile}` in backticks (say when to choose it)"
            ));
        }
    }
    let names: Vec<_> = profiles
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        errors.is_empty(),
        "{} problem(s) in OBS profiles:\n  {}",
        errors.len(),
        errors.join("\n  ")
    );
    println!("checked {} OBS profiles: {}", names.len(), names.join(", "));
}

/// The checker must not be vacuous: a copy of a real profile, broken one key at a time, must fail
/// with a message naming that file and key.
#[test]
fn broken_profiles_are_rejected_with_file_and_key() {
    let root = profiles_root();
    let source = discover_profiles(&root)
        .into_iter()
        .find(|p| {
            fs::read_to_string(p.join("basic.ini")).is_ok_and(|s| s.contains("Encoder=obs_x264"))
        })
        .expect("an x264 profile to break");
    let name = source.file_name().unwrap().to_string_lossy().into_owned();

    type Edit = (&'static str, &'static str, &'static str);
    let cases: &[(&str, &[Edit], &str)] = &[
        (
            "B-frames on",
            &[("streamEncoder.json", "\"bframes=0\"", "\"bframes=2\"")],
            "streamEncoder.json: x264opts",
        ),
        (
            "bf key",
            &[(
                "streamEncoder.json",
                "\"keyint_sec\"",
                "\"bf\": 2, \"keyint_sec\"",
            )],
            "streamEncoder.json: bf",
        ),
        (
            "long GOP",
            &[(
                "streamEncoder.json",
                "\"keyint_sec\": 1",
                "\"keyint_sec\": 4",
            )],
            "streamEncoder.json: keyint_sec",
        ),
        (
            "auto GOP",
            &[(
                "streamEncoder.json",
                "\"keyint_sec\": 1",
                "\"keyint_sec\": 0",
            )],
            "streamEncoder.json: keyint_sec",
        ),
        (
            "VBR",
            &[("streamEncoder.json", "\"CBR\"", "\"VBR\"")],
            "streamEncoder.json: rate_control",
        ),
        (
            "AAC",
            &[(
                "basic.ini",
                "AudioEncoder=ffmpeg_opus",
                "AudioEncoder=ffmpeg_aac",
            )],
            "basic.ini: [AdvOut] AudioEncoder",
        ),
        (
            "VP8 encoder",
            &[("basic.ini", "Encoder=obs_x264", "Encoder=ffmpeg_vpx")],
            "basic.ini: [AdvOut] Encoder",
        ),
        (
            "44.1 kHz",
            &[("basic.ini", "SampleRate=48000", "SampleRate=44100")],
            "basic.ini: [Audio] SampleRate",
        ),
        (
            "RTMP service",
            &[("service.json", "\"whip_custom\"", "\"rtmp_custom\"")],
            "service.json: type",
        ),
        (
            "WHEP URL",
            &[("service.json", "/whip/", "/whep/")],
            "service.json: settings.server",
        ),
        (
            "real token",
            &[("service.json", TOKEN_PLACEHOLDER, "s3cr3t")],
            "service.json: settings.bearer_token",
        ),
        (
            "INI syntax",
            &[("basic.ini", "[Video]", "[Video")],
            "basic.ini: line",
        ),
        (
            "JSON syntax",
            &[("streamEncoder.json", "}", "")],
            "streamEncoder.json",
        ),
    ];

    for (what, edits, expected) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(&name);
        fs::create_dir(&dir).unwrap();
        for file in REQUIRED_FILES {
            fs::copy(source.join(file), dir.join(file)).unwrap();
        }
        for (file, from, to) in edits.iter() {
            let path = dir.join(file);
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "{what}: `{from}` not found in {file}");
            fs::write(&path, text.replacen(from, to, 1)).unwrap();
        }
        let errors = check_profile(&dir);
        let want = format!("obs-profiles/{name}/{expected}");
        assert!(
            errors.iter().any(|e| e.starts_with(&want)),
            "{what}: expected an error starting with `{want}`, got {errors:#?}"
        );
    }

    // A missing file is named too.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join(&name);
    fs::create_dir(&dir).unwrap();
    fs::copy(source.join("basic.ini"), dir.join("basic.ini")).unwrap();
    fs::copy(source.join("service.json"), dir.join("service.json")).unwrap();
    let errors = check_profile(&dir);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("obs-profiles/{name}/streamEncoder.json: missing"))),
        "missing streamEncoder.json not reported: {errors:#?}"
    );
}

#[test]
fn ini_reader() {
    let ini = Ini::parse(
        "\u{feff}; comment\r\n[General]\r\nName=a=b\r\n\r\n# c\n[Video]\nBaseCX = 1920\n",
    )
    .unwrap();
    assert_eq!(ini.get("General", "Name"), Some("a=b"));
    assert_eq!(ini.get("Video", "BaseCX"), Some("1920"));
    assert_eq!(
        ini.get("Video", "basecx"),
        None,
        "OBS keys are case-sensitive"
    );
    assert!(Ini::parse("[A]\nx=1\nx=2\n").is_err(), "duplicate key");
    assert!(Ini::parse("x=1\n").is_err(), "key outside a section");
    assert!(Ini::parse("[A]\njunk\n").is_err(), "line without `=`");
}

// ---------------------------------------------------------------------------------------------
// The checker.

/// Which codec an OBS encoder id produces and which family of settings keys it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    X264,
    Nvenc,
    VideoToolbox,
    Qsv,
    Amf,
    /// An encoder with no B-frame setting of its own (e.g. SVT-AV1 through FFmpeg).
    Other,
}

/// OBS 30–32 video encoder ids for the codecs the gateway forwards (H264, H265, AV1), with the codec
/// name. An id not listed here fails the test: add it once you know it produces one of those codecs.
fn video_encoder(id: &str) -> Option<(&'static str, Family)> {
    use Family::*;
    Some(match id {
        "obs_x264" => ("H264", X264),
        // NVENC: `jim_*` are the ids before OBS 30.2's obs-nvenc rewrite (kept as compatibility
        // encoders), `obs_nvenc_*_tex` the new native ones, `ffmpeg_*nvenc` the FFmpeg fallback.
        "jim_nvenc" | "obs_nvenc_h264_tex" | "ffmpeg_nvenc" => ("H264", Nvenc),
        "jim_hevc_nvenc" | "obs_nvenc_hevc_tex" | "ffmpeg_hevc_nvenc" => ("H265", Nvenc),
        "jim_av1_nvenc" | "obs_nvenc_av1_tex" => ("AV1", Nvenc),
        // Apple VideoToolbox: hardware on Apple Silicon (`ave`), on Intel Macs (`gva`), software.
        "com.apple.videotoolbox.videoencoder.ave.avc"
        | "com.apple.videotoolbox.videoencoder.h264.gva"
        | "com.apple.videotoolbox.videoencoder.h264" => ("H264", VideoToolbox),
        "com.apple.videotoolbox.videoencoder.ave.hevc"
        | "com.apple.videotoolbox.videoencoder.hevc.vcp" => ("H265", VideoToolbox),
        "obs_qsv11_v2" | "obs_qsv11" => ("H264", Qsv),
        "obs_qsv11_hevc" => ("H265", Qsv),
        "obs_qsv11_av1" => ("AV1", Qsv),
        "h264_texture_amf" | "h264_fallback_amf" => ("H264", Amf),
        "h265_texture_amf" | "h265_fallback_amf" => ("H265", Amf),
        "av1_texture_amf" | "av1_fallback_amf" => ("AV1", Amf),
        "ffmpeg_svt_av1" | "ffmpeg_aom_av1" => ("AV1", Other),
        _ => return None,
    })
}

/// All problems with one profile folder, each naming the file and key.
fn check_profile(dir: &Path) -> Vec<String> {
    let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut errs = Errors {
        prefix: format!("obs-profiles/{profile}"),
        list: Vec::new(),
    };

    let mut texts = BTreeMap::new();
    for file in REQUIRED_FILES {
        match fs::read_to_string(dir.join(file)) {
            Ok(t) => {
                texts.insert(file, t);
            }
            Err(e) => errs.add(file, "missing", format!("cannot read: {e}")),
        }
    }

    let ini = texts.get("basic.ini").and_then(|t| match Ini::parse(t) {
        Ok(ini) => Some(ini),
        Err(e) => {
            errs.add("basic.ini", &e.0, e.1);
            None
        }
    });
    let json = |errs: &mut Errors, file: &'static str| -> Option<Value> {
        let text = texts.get(file)?;
        match serde_json::from_str::<Value>(text) {
            Ok(v) if v.is_object() => Some(v),
            Ok(_) => {
                errs.add(file, "(top level)", "must be a JSON object".into());
                None
            }
            Err(e) => {
                errs.add(file, "(syntax)", format!("invalid JSON: {e}"));
                None
            }
        }
    };
    let service = json(&mut errs, "service.json");
    let encoder = json(&mut errs, "streamEncoder.json");

    let family = ini
        .as_ref()
        .and_then(|ini| check_basic_ini(&mut errs, &profile, ini));
    if let Some(service) = &service {
        check_service(&mut errs, service);
    }
    // With an unknown or unreadable encoder id, the generic checks (CBR, keyint_sec, B-frames) still run.
    if let Some(encoder) = &encoder {
        check_encoder(&mut errs, encoder, family.unwrap_or(Family::Other));
    }
    errs.list
}

struct Errors {
    prefix: String,
    list: Vec<String>,
}

impl Errors {
    fn add(&mut self, file: &str, key: &str, msg: String) {
        self.list
            .push(format!("{}/{file}: {key}: {msg}", self.prefix));
    }
}

/// Checks `basic.ini`; returns the stream encoder's family when the encoder is one the gateway takes.
fn check_basic_ini(errs: &mut Errors, profile: &str, ini: &Ini) -> Option<Family> {
    const F: &str = "basic.ini";
    let require = |errs: &mut Errors, section: &str, key: &str| -> Option<String> {
        let v = ini.get(section, key).map(str::to_owned);
        if v.as_deref().is_none_or(str::is_empty) {
            errs.add(F, &format!("[{section}] {key}"), "missing".into());
        }
        v.filter(|v| !v.is_empty())
    };
    let expect = |errs: &mut Errors,
                  section: &str,
                  key: &str,
                  value: Option<String>,
                  want: &str,
                  why: &str| {
        if let Some(v) = value
            && v != want
        {
            errs.add(
                F,
                &format!("[{section}] {key}"),
                format!("is `{v}`, must be `{want}` ({why})"),
            );
        }
    };

    // [General] Name: what the Profile menu shows; kept equal to the folder name to avoid confusion.
    if let Some(name) = require(errs, "General", "Name")
        && name != profile
    {
        errs.add(
            F,
            "[General] Name",
            format!("is `{name}`, must equal the folder name `{profile}`"),
        );
    }

    let mode = require(errs, "Output", "Mode");
    expect(
        errs,
        "Output",
        "Mode",
        mode,
        "Advanced",
        "the encoder settings live in streamEncoder.json only in Advanced mode",
    );

    let family = require(errs, "AdvOut", "Encoder").and_then(|id| match video_encoder(&id) {
        Some((_codec, family)) => Some(family),
        None => {
            errs.add(
                F,
                "[AdvOut] Encoder",
                format!("`{id}` is not a known OBS H264/H265/AV1 encoder id (the gateway forwards H264, H265, AV1)"),
            );
            None
        }
    });
    if let Some(rec) = require(errs, "AdvOut", "RecEncoder")
        && rec != "none"
        && video_encoder(&rec).is_none()
    {
        errs.add(
            F,
            "[AdvOut] RecEncoder",
            format!("`{rec}` is not `none` (use the stream encoder) or a known encoder id"),
        );
    }
    let audio = require(errs, "AdvOut", "AudioEncoder");
    expect(
        errs,
        "AdvOut",
        "AudioEncoder",
        audio,
        "ffmpeg_opus",
        "WHIP audio is Opus",
    );

    let track = require(errs, "AdvOut", "TrackIndex");
    let track = track.and_then(|t| match t.parse::<u32>() {
        Ok(n @ 1..=6) => Some(n),
        _ => {
            errs.add(
                F,
                "[AdvOut] TrackIndex",
                format!("`{t}` is not an audio track 1–6"),
            );
            None
        }
    });
    if let Some(track) = track {
        let key = format!("Track{track}Bitrate");
        if let Some(b) = require(errs, "AdvOut", &key) {
            match b.parse::<u32>() {
                Ok(64..=510) => {}
                _ => errs.add(
                    F,
                    &format!("[AdvOut] {key}"),
                    format!("`{b}` kbps is outside 64–510 (Opus)"),
                ),
            }
        }
    }

    let int = |errs: &mut Errors, section: &str, key: &str| -> Option<u32> {
        let v = ini.get(section, key);
        match v.map(str::parse::<u32>) {
            Some(Ok(n)) if n > 0 => Some(n),
            _ => {
                errs.add(
                    F,
                    &format!("[{section}] {key}"),
                    format!("{v:?} is not a positive integer"),
                );
                None
            }
        }
    };
    for key in ["BaseCX", "BaseCY"] {
        int(errs, "Video", key);
    }
    let out_cx = int(errs, "Video", "OutputCX");
    let out_cy = int(errs, "Video", "OutputCY");
    for (key, v) in [("OutputCX", out_cx), ("OutputCY", out_cy)] {
        if v.is_some_and(|v| v % 2 != 0) {
            errs.add(
                F,
                &format!("[Video] {key}"),
                "must be even (4:2:0 video)".into(),
            );
        }
    }
    if let Some(t) = ini.get("Video", "FPSType")
        && t != "0"
    {
        errs.add(
            F,
            "[Video] FPSType",
            format!("is `{t}`, must be `0` (common FPS values, read from FPSCommon)"),
        );
    }
    let fps = require(errs, "Video", "FPSCommon").and_then(|f| {
        // OBS's common values: "30", "60", "29.97", "59.94", "24 NTSC", "25 PAL", "50 PAL".
        let number = f.split_whitespace().next().unwrap_or("");
        match number.parse::<f64>() {
            Ok(v) if (10.0..=240.0).contains(&v) => Some(v),
            _ => {
                errs.add(F, "[Video] FPSCommon", format!("`{f}` is not a frame rate"));
                None
            }
        }
    });

    // A folder named `…<height>p<fps>…` must deliver what it says.
    if let Some((height, rate)) = name_resolution(profile) {
        if out_cy.is_some_and(|h| h != height) {
            errs.add(
                F,
                "[Video] OutputCY",
                format!(
                    "is {}, but the profile name says {height}p",
                    out_cy.unwrap()
                ),
            );
        }
        if fps.is_some_and(|f| f.round() as u32 != rate) {
            errs.add(
                F,
                "[Video] FPSCommon",
                format!("is {}, but the profile name says {rate} fps", fps.unwrap()),
            );
        }
    }

    let rate = require(errs, "Audio", "SampleRate");
    expect(
        errs,
        "Audio",
        "SampleRate",
        rate,
        "48000",
        "Opus runs at 48 kHz; anything else is resampled",
    );

    // OBS 32 WHIP simulcast. Source of truth: `[Stream1] WHIPSimulcast` / `WHIPSimulcastTotalLayers`
    // (see obs-profiles/README.md).
    let layers = ini.get("Stream1", "WHIPSimulcastTotalLayers");
    let wants_simulcast = profile.to_ascii_lowercase().contains("simulcast");
    match layers {
        Some(l) => match l.parse::<u32>() {
            Ok(n @ 1..=4) => {
                if wants_simulcast && n < 2 {
                    errs.add(
                        F,
                        "[Stream1] WHIPSimulcastTotalLayers",
                        format!("is {n}, a simulcast profile needs 2–4 layers"),
                    );
                }
                if n >= 2
                    && ini
                        .get("Stream1", "WHIPSimulcast")
                        .is_some_and(|e| e != "true")
                {
                    errs.add(
                        F,
                        "[Stream1] WHIPSimulcast",
                        "must be `true` when WHIPSimulcastTotalLayers ≥ 2".into(),
                    );
                }
            }
            _ => errs.add(
                F,
                "[Stream1] WHIPSimulcastTotalLayers",
                format!("`{l}` is not a layer count 1–4"),
            ),
        },
        None if wants_simulcast => errs.add(
            F,
            "[Stream1] WHIPSimulcastTotalLayers",
            "missing (the folder name says simulcast)".into(),
        ),
        None => {}
    }

    family
}

/// `WHIP-1080p60-NVENC` → (1080, 60).
fn name_resolution(name: &str) -> Option<(u32, u32)> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .find_map(|part| {
            let (h, f) = part.split_once('p')?;
            Some((h.parse().ok()?, f.parse().ok()?))
        })
}

fn check_service(errs: &mut Errors, service: &Value) {
    const F: &str = "service.json";
    match service.get("type").and_then(Value::as_str) {
        Some("whip_custom") => {}
        _ => errs.add(
            F,
            "type",
            format!(
                "is {}, must be \"whip_custom\" (OBS's WHIP service)",
                show(service.get("type"))
            ),
        ),
    }
    let Some(settings) = service.get("settings").and_then(Value::as_object) else {
        errs.add(F, "settings", "missing or not an object".into());
        return;
    };
    match settings.get("service").and_then(Value::as_str) {
        Some("WHIP") => {}
        _ => errs.add(
            F,
            "settings.service",
            format!("is {}, must be \"WHIP\"", show(settings.get("service"))),
        ),
    }
    match settings.get("server").and_then(Value::as_str) {
        Some(url) => {
            if let Err(why) = check_whip_url(url) {
                errs.add(F, "settings.server", format!("`{url}` {why}"));
            }
        }
        None => errs.add(F, "settings.server", "missing".into()),
    }
    match settings.get("bearer_token").and_then(Value::as_str) {
        Some(TOKEN_PLACEHOLDER) => {}
        _ => errs.add(
            F,
            "settings.bearer_token",
            format!("is {}, must be the placeholder \"{TOKEN_PLACEHOLDER}\" (never commit a real token)", show(settings.get("bearer_token"))),
        ),
    }
}

/// `http(s)://<host>[:port]/whip/<stream>` with a stream name the gateway accepts.
fn check_whip_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let (host, path) = rest.split_once('/').ok_or("has no path")?;
    if host.is_empty() {
        return Err("has no host".into());
    }
    let name = path
        .strip_prefix("whip/")
        .ok_or("must have the path /whip/<stream>")?;
    let valid = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
    if !valid {
        return Err(format!(
            "has stream name `{name}`: must be 1–128 of A-Z a-z 0-9 - _ . ~ (no query, no further path)"
        ));
    }
    Ok(())
}

/// A JSON value for a message: `"CBR"`, `4`, or `missing`.
fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "missing".to_owned(), Value::to_string)
}

fn check_encoder(errs: &mut Errors, enc: &Value, family: Family) {
    const F: &str = "streamEncoder.json";
    let get = |key: &str| enc.get(key);

    match get("rate_control").and_then(Value::as_str) {
        Some("CBR") => {}
        _ => errs.add(
            F,
            "rate_control",
            format!("is {}, must be \"CBR\"", show(get("rate_control"))),
        ),
    }
    match get("bitrate").and_then(Value::as_u64) {
        Some(300..=20_000) => {}
        _ => errs.add(
            F,
            "bitrate",
            format!("is {}, must be 300–20000 kbps", show(get("bitrate"))),
        ),
    }
    match get("keyint_sec").and_then(Value::as_u64) {
        Some(1..=2) => {}
        _ => errs.add(
            F,
            "keyint_sec",
            format!(
                "is {}, must be 1 or 2 seconds (0 = encoder default, often 8 s+: OBS ignores keyframe requests)",
                show(get("keyint_sec"))
            ),
        ),
    }

    // Generic B-frame keys: wherever present they must say "none".
    for key in ["bf", "bframes", "b_frames"] {
        if let Some(v) = get(key) {
            let off = v.as_u64() == Some(0) || v.as_bool() == Some(false);
            if !off {
                errs.add(F, key, format!("is {v}, must be 0 / false (no B-frames)"));
            }
        }
    }
    // The key that encoder really reads must be present.
    let required = match family {
        Family::Nvenc | Family::Amf => Some(("bf", "0")),
        Family::Qsv => Some(("bframes", "0")),
        Family::VideoToolbox => Some(("bframes", "false (OBS does not force it for VideoToolbox)")),
        Family::X264 | Family::Other => None,
    };
    if let Some((key, want)) = required
        && get(key).is_none()
    {
        errs.add(F, key, format!("missing, must be {want} (no B-frames)"));
    }

    match family {
        Family::X264 => {
            let opts = get("x264opts").and_then(Value::as_str).unwrap_or("");
            let mut bframes_off = false;
            for opt in opts.split([' ', ':']).filter(|o| !o.is_empty()) {
                let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
                match k {
                    "bframes" | "b-frames" if v == "0" => bframes_off = true,
                    "bframes" | "b-frames" => {
                        errs.add(F, "x264opts", format!("`{opt}`: must be bframes=0"))
                    }
                    "keyint" | "min-keyint" | "rc-lookahead" | "sync-lookahead" | "b-pyramid" => {
                        errs.add(
                            F,
                            "x264opts",
                            format!(
                                "`{opt}` overrides keyint_sec / zero-latency tuning; remove it"
                            ),
                        )
                    }
                    _ => {}
                }
            }
            let tune = get("tune").and_then(Value::as_str).unwrap_or("");
            if !tune.split(',').any(|t| t == "zerolatency") {
                errs.add(F, "tune", format!("is {tune:?}, must include \"zerolatency\" (no lookahead, no frame threads delay, no B-frames)"));
            }
            if !bframes_off && get("bf").is_none() {
                errs.add(
                    F,
                    "x264opts",
                    "must contain bframes=0 (explicit, whatever the tune)".into(),
                );
            }
        }
        Family::Nvenc => {
            match get("tune").and_then(Value::as_str) {
                Some("ll" | "ull") => {}
                _ => errs.add(
                    F,
                    "tune",
                    format!(
                        "is {}, must be \"ll\" or \"ull\" (low latency)",
                        show(get("tune"))
                    ),
                ),
            }
            if let Some(m) = get("multipass").and_then(Value::as_str)
                && m != "disabled"
            {
                errs.add(
                    F,
                    "multipass",
                    format!("is {m:?}, must be \"disabled\" (latency)"),
                );
            }
            if get("lookahead").and_then(Value::as_bool) == Some(true) {
                errs.add(
                    F,
                    "lookahead",
                    "must be false (lookahead delays frames)".into(),
                );
            }
        }
        Family::Qsv => match get("latency").and_then(Value::as_str) {
            Some("low" | "ultra-low") => {}
            _ => errs.add(
                F,
                "latency",
                format!(
                    "is {}, must be \"low\" or \"ultra-low\"",
                    show(get("latency"))
                ),
            ),
        },
        Family::VideoToolbox | Family::Amf | Family::Other => {}
    }

    // Browsers decode 8-bit 4:2:0 only (no High 10 / 4:2:2 / 4:4:4).
    if let Some(profile) = get("profile").and_then(Value::as_str)
        && ["10", "422", "444"].iter().any(|p| profile.contains(p))
    {
        errs.add(
            F,
            "profile",
            format!("`{profile}`: browsers decode 8-bit 4:2:0 only"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A small INI reader for OBS's config files: `[Section]`, `Key=Value` (the value is everything after
// the first `=`, trimmed), `;` or `#` comments, CRLF or LF, an optional UTF-8 BOM. Keys are
// case-sensitive like OBS's `config_get_*`. Duplicates are an error: OBS would take one silently.

struct Ini {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

/// (`line N` location, message)
#[derive(Debug)]
struct IniError(String, String);

impl Ini {
    fn parse(text: &str) -> Result<Ini, IniError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let at = format!("line {}", i + 1);
            let line = raw.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| {
                    IniError(at.clone(), format!("`{line}`: section header without `]`"))
                })?;
                sections.entry(name.to_owned()).or_default();
                current = Some(name.to_owned());
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| {
                IniError(
                    at.clone(),
                    format!("`{line}`: neither `[Section]` nor `Key=Value`"),
                )
            })?;
            let section = current.as_ref().ok_or_else(|| {
                IniError(at.clone(), format!("`{line}`: key before any [Section]"))
            })?;
            let key = key.trim();
            if key.is_empty() {
                return Err(IniError(at, format!("`{line}`: empty key")));
            }
            let previous = sections
                .get_mut(section)
                .unwrap()
                .insert(key.to_owned(), value.trim().to_owned());
            if previous.is_some() {
                return Err(IniError(at, format!("[{section}] {key}: duplicate key")));
            }
        }
        Ok(Ini { sections })
    }

    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section)?.get(key).map(String::as_str)
    }
}
