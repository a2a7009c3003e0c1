//! The `replicate` provider: Replicate's predictions API (CONTRACTS.md).
//!
//! One attempt is one prediction: created (from the model's endpoint, or a
//! pinned version), its id recorded before anything waits on it, polled with
//! backoff until it ends, cancelled when the shop gives up on it, and its
//! output downloaded at once (Replicate deletes outputs after about an hour)
//! with a size limit. A resumed attempt polls its recorded prediction and
//! never creates a second one.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};
use reqwest::{Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ErrorKind, RecordSubmission, RestoreError, RestoreRequest, Restored, Restorer, metadata,
    outputs::{self, OutputPolicy},
};
use crate::{
    config::{OptionSettings, ReplicateSettings, UploadSettings},
    domain::{chain::Step, options::RestorationOption},
    storage::Storage,
    validation::{self, PhotoKind, PhotoLimits},
};

/// How much larger than an upload a restored photo may be, in pixels: the
/// models upscale (4× a side at most).
const OUTPUT_PIXELS_FACTOR: u64 = 16;

/// Finished predictions that Replicate pushed to the shop's webhook,
/// broadcast to the attempts of this process that wait on them. A wait that
/// hears nothing (the webhook reached another instance, or was lost) still
/// ends by polling.
#[derive(Clone)]
pub struct PredictionNotices(tokio::sync::broadcast::Sender<Prediction>);

impl Default for PredictionNotices {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(1024).0)
    }
}

impl PredictionNotices {
    pub fn publish(&self, prediction: Prediction) {
        let _ = self.0.send(prediction);
    }

    /// The next notice about prediction `id`.
    async fn next_for(receiver: &mut tokio::sync::broadcast::Receiver<Prediction>, id: &str) -> Prediction {
        loop {
            match receiver.recv().await {
                Ok(p) if p.id == id => return p,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

/// The model one chain step runs, and how its inputs are named.
#[derive(Debug, Clone)]
struct Model {
    /// `owner/name`.
    name: String,
    /// A pinned version, when the configuration names one.
    version: Option<String>,
    image_input: String,
    extra_input: Map<String, Value>,
}

impl Model {
    fn new(key: &str, model: &str, image_input: &str, extra_input: &str) -> Result<Self, RestoreError> {
        let extra_input = match serde_json::from_str::<Value>(extra_input.trim()) {
            Ok(Value::Object(map)) => map,
            _ if extra_input.trim().is_empty() => Map::new(),
            _ => {
                return Err(RestoreError::permanent(format!(
                    "{key}.extra_input must be a JSON object"
                )));
            }
        };
        let (name, version) = match model.split_once(':') {
            Some((name, version)) => (name.to_owned(), Some(version.to_owned())),
            None => (model.to_owned(), None),
        };
        Ok(Self {
            name,
            version,
            image_input: image_input.to_owned(),
            extra_input,
        })
    }
}

pub struct ReplicateRestorer {
    http: reqwest::Client,
    notices: PredictionNotices,
    base: String,
    token: String,
    /// Each chain step's model: `[replicate]` for the repair, `[options.NAME]`
    /// for the options that name one.
    models: HashMap<Step, Model>,
    webhook: Option<String>,
    poll_interval: Duration,
    prediction_timeout: Duration,
    max_output_bytes: u64,
    data_uri_limit: u64,
    storage: Storage,
    /// Where outputs may come from, and the client that holds to it.
    outputs: OutputPolicy,
    output_http: reqwest::Client,
    /// What an output must be to be stored: a photo within these limits.
    output_limits: PhotoLimits,
    /// The uploads' limits, for the photos sent as inputs.
    input_limits: PhotoLimits,
}

/// The parts of a prediction the shop reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
}

impl Prediction {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "canceled")
    }

    /// The output file's URL (a list's first entry for models that return several).
    pub fn output_url(&self) -> Option<&str> {
        match self.output.as_ref()? {
            Value::String(url) => Some(url),
            Value::Array(items) => items.iter().find_map(Value::as_str),
            Value::Object(map) => map.values().find_map(Value::as_str),
            _ => None,
        }
    }
}

impl ReplicateRestorer {
    pub fn new(
        settings: &ReplicateSettings,
        options: &BTreeMap<String, OptionSettings>,
        uploads: &UploadSettings,
        storage: Storage,
        notices: PredictionNotices,
    ) -> Result<Self, RestoreError> {
        let outputs =
            OutputPolicy::new(&settings.output_hosts, &settings.api_base).map_err(RestoreError::permanent)?;
        let output_http = outputs
            .client(settings.request_timeout)
            .map_err(|e| RestoreError::permanent(e.to_string()))?;
        let output_limits = PhotoLimits {
            max_file_bytes: settings.max_output_bytes,
            max_pixels: uploads.max_pixels.saturating_mul(OUTPUT_PIXELS_FACTOR),
            min_dimension: 1,
            allowed: vec![PhotoKind::Jpeg, PhotoKind::Png, PhotoKind::Webp, PhotoKind::Tiff],
            max_decode_bytes: uploads.max_decode_bytes.saturating_mul(OUTPUT_PIXELS_FACTOR),
        };
        let mut models = HashMap::from([(
            Step::Repair,
            Model::new(
                "replicate",
                &settings.model,
                &settings.image_input,
                &settings.extra_input,
            )?,
        )]);
        for option in RestorationOption::ALL {
            if let Some(o) = options
                .get(option.as_str())
                .filter(|o| !o.model.trim().is_empty())
            {
                let key = format!("options.{option}");
                models.insert(
                    Step::Option(option),
                    Model::new(&key, &o.model, &o.image_input, &o.extra_input)?,
                );
            }
        }
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RestoreError::permanent(e.to_string()))?;
        Ok(Self {
            http,
            notices,
            base: settings.api_base.trim_end_matches('/').to_owned(),
            token: settings.api_token.expose().to_owned(),
            models,
            webhook: settings.webhook_url.clone().filter(|_| settings.webhooks),
            poll_interval: settings.poll_interval,
            prediction_timeout: settings.prediction_timeout,
            max_output_bytes: settings.max_output_bytes,
            data_uri_limit: settings.data_uri_limit,
            storage,
            outputs,
            output_http,
            output_limits,
            input_limits: PhotoLimits::from_settings(uploads),
        })
    }

    /// `photo` without its metadata, on the blocking pool.
    async fn stripped(&self, photo: Bytes, limits: PhotoLimits) -> Result<Bytes, RestoreError> {
        tokio::task::spawn_blocking(move || metadata::strip(photo, &limits))
            .await
            .map_err(|e| RestoreError::transient(format!("the metadata strip stopped: {e}")))?
            .map_err(|e| RestoreError::permanent(e.to_string()))
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(&self.token)
    }

    /// The image as the model's input, upright and without its metadata
    /// (no GPS leaves the shop): inline when small, else uploaded first. A
    /// later step's input is an earlier model's output, within the limits
    /// outputs are held to (a face model may have enlarged it).
    async fn image_input(&self, request: &RestoreRequest) -> Result<String, RestoreError> {
        let original = self.storage.get(&request.input_key).await?;
        let limits = match request.step {
            Step::Repair => self.input_limits.clone(),
            Step::Option(_) => self.output_limits.clone(),
        };
        let bytes = self.stripped(original, limits).await?;
        if bytes.len() as u64 <= self.data_uri_limit {
            let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
            return Ok(format!("data:{};base64,{data}", request.content_type));
        }
        let file_name = request.input_key.rsplit('/').next().unwrap_or("photo").to_owned();
        let part = reqwest::multipart::Part::bytes(bytes.to_vec())
            .file_name(file_name)
            .mime_str(&request.content_type)
            .map_err(|e| RestoreError::permanent(e.to_string()))?;
        let form = reqwest::multipart::Form::new().part("content", part);
        let response = self
            .auth(self.http.post(format!("{}/v1/files", self.base)))
            .multipart(form)
            .send()
            .await
            .map_err(transport)?;
        let file: Value = checked(response).await?.json().await.map_err(transport)?;
        file["urls"]["get"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| RestoreError::transient("Replicate's file upload answered without urls.get"))
    }

    async fn create(&self, request: &RestoreRequest) -> Result<Prediction, RestoreError> {
        let model = self.models.get(&request.step).ok_or_else(|| {
            RestoreError::permanent(format!("no Replicate model is configured for {}", request.step))
        })?;
        let mut input = model.extra_input.clone();
        // Only a model whose configured inputs name a seed takes one (an
        // input a model does not declare is refused).
        if let (Some(seed), Some(slot)) = (request.seed, input.get_mut("seed")) {
            *slot = json!(seed);
        }
        input.insert(
            model.image_input.clone(),
            Value::String(self.image_input(request).await?),
        );
        let mut body = json!({ "input": input });
        if let Some(webhook) = &self.webhook {
            body["webhook"] = json!(webhook);
            body["webhook_events_filter"] = json!(["completed"]);
        }
        let url = match &model.version {
            Some(version) => {
                body["version"] = json!(version);
                format!("{}/v1/predictions", self.base)
            }
            None => format!("{}/v1/models/{}/predictions", self.base, model.name),
        };
        let response = self
            .auth(self.http.post(url))
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        checked(response).await?.json().await.map_err(transport)
    }

    async fn get(&self, id: &str) -> Result<Prediction, RestoreError> {
        let response = self
            .auth(self.http.get(format!("{}/v1/predictions/{id}", self.base)))
            .send()
            .await
            .map_err(transport)?;
        checked(response).await?.json().await.map_err(transport)
    }

    /// Asks Replicate to stop a prediction the shop no longer waits for.
    async fn cancel(&self, id: &str) {
        let sent = self
            .auth(
                self.http
                    .post(format!("{}/v1/predictions/{id}/cancel", self.base)),
            )
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!(prediction = id, error = %e, "cannot cancel a prediction");
        }
    }

    /// Waits until the prediction ends: a webhook notice ends the wait at
    /// once; otherwise it polls, backing off to ten times the interval.
    async fn wait(&self, mut prediction: Prediction) -> Result<Prediction, RestoreError> {
        let deadline = tokio::time::Instant::now() + self.prediction_timeout;
        let mut delay = self.poll_interval;
        let mut notices = self.notices.0.subscribe();
        while !prediction.is_finished() {
            let next_poll = tokio::time::Instant::now() + delay;
            if next_poll > deadline {
                self.cancel(&prediction.id).await;
                return Err(RestoreError::transient(format!(
                    "prediction {} did not finish within {:?}",
                    prediction.id, self.prediction_timeout
                )));
            }
            tokio::select! {
                () = tokio::time::sleep_until(next_poll) => {}
                pushed = PredictionNotices::next_for(&mut notices, &prediction.id) => {
                    prediction = pushed;
                    continue;
                }
            }
            delay = (delay * 2).min(self.poll_interval * 10);
            prediction = match self.get(&prediction.id).await {
                Ok(p) => p,
                // A blip (or throttling) while polling does not lose the
                // prediction: keep waiting.
                Err(e) if matches!(e.kind, ErrorKind::Transient | ErrorKind::Throttled) => {
                    tracing::warn!(prediction = %prediction.id, error = %e, "polling failed; retrying");
                    if let Some(wait) = e.retry_after {
                        tokio::time::sleep(wait).await;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
        }
        Ok(prediction)
    }

    /// Downloads the output (at most `max_output_bytes`) into storage.
    /// A failure to fetch or store the output of `prediction` (finished,
    /// paid for) is to be resumed from it, unless the output is gone (404:
    /// a new prediction is needed) or refused for good.
    async fn download(
        &self,
        url: &str,
        request: &RestoreRequest,
        prediction: &str,
    ) -> Result<Restored, RestoreError> {
        let resumable = |e: RestoreError| match e.kind {
            ErrorKind::Permanent => e,
            _ => e.resuming(prediction),
        };
        // The output is untrusted: only from the allowed hosts, never the
        // shop's own network.
        let parsed =
            url::Url::parse(url).map_err(|_| RestoreError::permanent("the model's output is not a URL"))?;
        self.outputs.check(&parsed).map_err(RestoreError::permanent)?;
        let response = self.output_http.get(parsed).send().await.map_err(|e| {
            if outputs::refused(&e) {
                RestoreError::permanent(format!("the model's output was refused: {e}"))
            } else {
                resumable(transport(e))
            }
        })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(RestoreError::transient(
                "Replicate answered 404 for the output: it is gone; a new prediction is needed",
            ));
        }
        self.store_output(checked(response).await.map_err(resumable)?, request)
            .await
            .map_err(resumable)
    }

    async fn store_output(
        &self,
        response: Response,
        request: &RestoreRequest,
    ) -> Result<Restored, RestoreError> {
        if response
            .content_length()
            .is_some_and(|n| n > self.max_output_bytes)
        {
            return Err(RestoreError::permanent(
                "the restored photo is larger than the shop accepts",
            ));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport)?;
            if (body.len() + chunk.len()) as u64 > self.max_output_bytes {
                return Err(RestoreError::permanent(
                    "the restored photo is larger than the shop accepts",
                ));
            }
            body.extend_from_slice(&chunk);
        }
        // Only a photo is stored as the customer's restored photo.
        let limits = self.output_limits.clone();
        let (body, checked) = tokio::task::spawn_blocking(move || {
            let checked = validation::validate(&body, &limits);
            (body, checked)
        })
        .await
        .map_err(|e| RestoreError::transient(format!("the output check stopped: {e}")))?;
        if let Err(rejection) = checked {
            return Err(RestoreError::permanent(format!(
                "the model's output is not a photo the shop accepts: {rejection}"
            )));
        }
        let body = self.stripped(body.into(), self.output_limits.clone()).await?;
        let output_key = with_extension_of(&request.output_key, &body);
        let bytes = body.len() as u64;
        self.storage.put(&output_key, body).await?;
        Ok(Restored { output_key, bytes })
    }
}

/// The output key with the extension of what the model actually returned.
fn with_extension_of(key: &str, body: &[u8]) -> String {
    let ext = match image::guess_format(body) {
        Ok(image::ImageFormat::Png) => "png",
        Ok(image::ImageFormat::Jpeg) => "jpg",
        Ok(image::ImageFormat::WebP) => "webp",
        Ok(image::ImageFormat::Tiff) => "tiff",
        _ => return key.to_owned(),
    };
    match key.rsplit_once('.') {
        Some((stem, _)) => format!("{stem}.{ext}"),
        None => format!("{key}.{ext}"),
    }
}

fn transport(e: reqwest::Error) -> RestoreError {
    RestoreError::transient(format!("Replicate unreachable: {e}"))
}

/// Passes a success through; classifies an error answer.
async fn checked(response: Response) -> Result<Response, RestoreError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let detail = body["detail"]
        .as_str()
        .or(body["title"].as_str())
        .unwrap_or("no detail");
    let message = format!("Replicate answered {status}: {detail}");
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(RestoreError::throttled(message, retry_after));
    }
    let transient =
        status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::CONFLICT || status.is_server_error();
    Err(RestoreError {
        retry_after,
        ..if transient {
            RestoreError::transient(message)
        } else {
            RestoreError::permanent(message)
        }
    })
}

impl Restorer for ReplicateRestorer {
    fn name(&self) -> &'static str {
        "replicate"
    }

    fn restore<'a>(
        &'a self,
        request: &'a RestoreRequest,
        record: RecordSubmission,
    ) -> BoxFuture<'a, Result<Restored, RestoreError>> {
        Box::pin(async move {
            let prediction = match &request.external_id {
                Some(id) => self.get(id).await?,
                None => {
                    let created = self.create(request).await?;
                    match record(request.job_id, request.attempt, created.id.clone()).await {
                        Ok(true) => created,
                        // The attempt is no longer ours: stop its work.
                        Ok(false) => {
                            self.cancel(&created.id).await;
                            return Err(RestoreError::outage(
                                "the attempt is no longer this instance's; its prediction was cancelled",
                            ));
                        }
                        // The database is away: the prediction runs on and its
                        // result is written (fenced) when it is back. Only a
                        // crash before then makes the next attempt submit again.
                        Err(e) => {
                            tracing::warn!(prediction = %created.id, error = %e,
                                           "cannot record the prediction; waiting on it unrecorded");
                            created
                        }
                    }
                }
            };
            let finished = self.wait(prediction).await?;
            match finished.status.as_str() {
                "succeeded" => {
                    let url = finished.output_url().ok_or_else(|| {
                        RestoreError::transient("the prediction succeeded without an output")
                    })?;
                    // The prediction is paid for: a failed fetch or store is
                    // retried from it (its output lives about an hour), not
                    // by a new prediction.
                    self.download(url, request, &finished.id).await
                }
                "canceled" => Err(RestoreError::transient(format!(
                    "prediction {} was canceled",
                    finished.id
                ))),
                _ => Err(RestoreError::transient(format!(
                    "the model failed: {}",
                    finished
                        .error
                        .as_ref()
                        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                        .unwrap_or_else(|| "no reason given".into())
                ))),
            }
        })
    }

    fn cancel<'a>(&'a self, external_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(ReplicateRestorer::cancel(self, external_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_may_be_a_url_or_a_list() {
        let p = |output: Value| Prediction {
            id: "p".into(),
            status: "succeeded".into(),
            output: Some(output),
            error: None,
        };
        assert_eq!(p(json!("https://x/a.png")).output_url(), Some("https://x/a.png"));
        assert_eq!(
            p(json!(["https://x/b.png", "https://x/c.png"])).output_url(),
            Some("https://x/b.png")
        );
        assert_eq!(p(json!(null)).output_url(), None);
    }

    #[test]
    fn output_keys_follow_the_returned_format() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(
            with_extension_of("uploads/restored/o/001_a_restored.jpg", png),
            "uploads/restored/o/001_a_restored.png"
        );
        assert_eq!(with_extension_of("k.jpg", b"??"), "k.jpg");
    }
}
