// The facelens console's only script (no inline script anywhere: the pages' CSP forbids it).
// Every page works without it; it adds confirmation of destructive forms, and drag and drop with
// per-file progress to the enrol form (one request per image, the results shown as they come), and the
// progress of running audits (polled as JSON; without the script, the page's "refresh" link shows it).
"use strict";

document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.classList && form.classList.contains("confirm") && !window.confirm(form.dataset.confirm || "Sure?")) {
    event.preventDefault();
  }
});

function setupEnrol(form) {
  var input = form.querySelector("input[type=file]");
  var drop = form.querySelector(".drop");
  var bar = form.querySelector("progress");
  var out = document.getElementById("enrol-results");
  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) { input.files = e.dataTransfer.files; }
  });
  form.addEventListener("submit", function (event) {
    var files = Array.prototype.slice.call(input.files);
    if (!files.length || !window.fetch) { return; }  // the plain form post does it
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    bar.hidden = false;
    bar.max = files.length;
    bar.value = 0;
    out.textContent = "";
    var done = 0;
    var next = function () {
      if (!files.length) {
        button.disabled = false;
        var end = document.createElement("p");
        end.id = "enrol-done";
        end.textContent = done + " image(s) sent. ";
        var again = document.createElement("a");
        again.href = window.location.pathname;
        again.textContent = "Reload the collection";
        end.appendChild(again);
        out.appendChild(end);
        return;
      }
      var file = files.shift();
      var data = new FormData(form);
      data.delete("images");
      data.append("images", file, file.name);
      fetch(form.action, {method: "POST", body: data, credentials: "same-origin",
                          headers: {"X-Console-Part": "1"}})
        .then(function (r) {
          return r.text().then(function (text) {
            if (r.ok) {
              out.insertAdjacentHTML("beforeend", text);  // the server's escaped template fragment
            } else {
              var p = document.createElement("p");
              p.className = "result bad";
              p.textContent = file.name + ": not sent (HTTP " + r.status + "); reload the page and try again";
              out.appendChild(p);
            }
          });
        })
        .catch(function () {
          var p = document.createElement("p");
          p.className = "result bad";
          p.textContent = file.name + ": the service could not be reached";
          out.appendChild(p);
        })
        .then(function () { done += 1; bar.value = done; next(); });
    };
    next();
  });
}

// The search form follows the chosen collection's policy: a purpose required, modes not allowed disabled,
// the identification rate bounded; so the browser refuses, before sending, a search the API would refuse.
function applyRules(form, rules) {
  document.getElementById("policy-hint").textContent = rules.words;
  var purpose = form.querySelector("#purpose");
  purpose.required = !!rules.purpose_required;
  document.getElementById("purpose-need").textContent = rules.purpose_required
    ? "(required: a case reference or reason, recorded in the log)" : "(optional)";
  var firstAllowed = null;
  Array.prototype.forEach.call(form.querySelectorAll("input[name=mode]"), function (radio) {
    var allowed = rules.allowed_modes.indexOf(radio.value) >= 0;
    radio.disabled = !allowed;
    radio.parentNode.classList.toggle("disallowed", !allowed);
    document.getElementById("not-allowed-" + radio.value).hidden = allowed;
    if (allowed && firstAllowed === null) { firstAllowed = radio; }
    if (!allowed && radio.checked) { radio.checked = false; }
  });
  if (!form.querySelector("input[name=mode]:checked") && firstAllowed) { firstAllowed.checked = true; }
  var fpir = form.querySelector("#max_fpir");
  if (rules.max_fpir === null) { fpir.removeAttribute("max"); } else { fpir.max = String(rules.max_fpir); }
  var floor = rules.max_fpir !== null && rules.max_fpir < rules.default_fpir ? rules.max_fpir : rules.default_fpir;
  document.getElementById("fpir-default").textContent = String(floor);
  document.getElementById("fpir-limit").textContent = rules.max_fpir === null ? ""
    : "; the policy allows at most " + rules.max_fpir;
  followMode(form);
}

function followMode(form) {
  var checked = form.querySelector("input[name=mode]:checked");
  form.querySelector("#max_fpir").disabled = !checked || checked.value !== "identify";
}

function setupSearch(form) {
  var select = form.querySelector("#collection");
  select.addEventListener("change", function () {
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;  // until the new collection's rules are on the form
    fetch("/console/c/" + encodeURIComponent(select.value) + "/search-rules.json", {credentials: "same-origin"})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (rules) { applyRules(form, rules); })
      .catch(function () {
        document.getElementById("policy-hint").textContent =
          "This collection's policy could not be read: the service will check it when the form is sent.";
      })
      .then(function () { button.disabled = false; });
  });
  form.addEventListener("change", function (event) {
    if (event.target.name === "mode") { followMode(form); }
  });
}

function watchJob(row) {
  var name = row.dataset.job;
  var status = row.querySelector(".job-status");
  var poll = function () {
    fetch("/console/audit/jobs/" + encodeURIComponent(name) + ".json", {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (job) {
        if (!job) { window.setTimeout(poll, 5000); return; }
        row.dataset.state = job.state;
        if (job.state === "running") {
          var bar = status.querySelector(".job-progress");
          bar.max = job.total || 1;
          bar.value = job.done;
          bar.textContent = job.percent + "%";
          status.querySelector(".job-stage").textContent = job.stage;
          status.querySelector(".job-count").textContent = job.done + " / " + job.total;
          window.setTimeout(poll, 1500);
          return;
        }
        status.textContent = "";
        if (job.state === "done") {
          status.appendChild(document.createTextNode("done: "));
          var link = document.createElement("a");
          link.className = "job-report";
          link.href = job.report + "#shown";
          link.textContent = "open the report";
          status.appendChild(link);
        } else {
          var what = document.createElement("span");
          what.className = "bad";
          what.textContent = job.state;
          var why = document.createElement("span");
          why.className = "job-error";
          why.textContent = job.error || "";
          status.appendChild(what);
          status.appendChild(document.createTextNode(": "));
          status.appendChild(why);
        }
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  };
  window.setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("enrol-form");
  if (form) { setupEnrol(form); }
  var search = document.getElementById("search-form");
  if (search) { setupSearch(search); }
  Array.prototype.forEach.call(document.querySelectorAll("tr.job[data-state=running]"), watchJob);
});
