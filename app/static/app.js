// Live notifications: a Server-Sent Events stream, shown as popups (and as desktop
// notifications when the user allows them); open pages refresh their live parts.
(function () {
  "use strict";
  var script = document.currentScript;
  var toasts = document.getElementById("toasts");
  var MAX_TOASTS = 5; // the newest; a burst of opens does not bury the page

  function toast(item) {
    var box = document.createElement("div");
    box.className = "toast";
    box.setAttribute("role", "status");
    var title = document.createElement("strong");
    title.textContent = item.title;
    var body = document.createElement("span");
    body.textContent = item.body;
    var link = document.createElement("a");
    link.href = "/messages/" + encodeURIComponent(item.message_id);
    link.textContent = " View";
    box.append(title, body, link);
    toasts.append(box);
    while (toasts.children.length > MAX_TOASTS) toasts.firstElementChild.remove();
    setTimeout(function () { box.remove(); }, 12000);
  }

  function desktop(item) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    new Notification(item.title, { body: item.body, tag: "trailmark-" + item.id });
  }

  // A burst of events loads each live part at once and then at most every two
  // seconds, not once per event: a busy message's timeline is large, and every
  // load of it is work for the server that answers the pixels too.
  var REFRESH_GAP_MS = 2000;
  var parts = {};

  function refresh(selector, attribute) {
    var part = parts[selector] || (parts[selector] = { scheduled: false, last: 0 });
    if (part.scheduled) return; // the load to come will show this event as well
    part.scheduled = true;
    setTimeout(function () {
      part.scheduled = false;
      part.last = Date.now();
      load(selector, attribute);
    }, Math.max(0, part.last + REFRESH_GAP_MS - Date.now()));
  }

  function load(selector, attribute) {
    var el = document.querySelector(selector);
    if (!el) return;
    var target = el.id === "timeline" ? el : document.getElementById("inbox-rows");
    fetch(el.getAttribute(attribute), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { target.innerHTML = html; })
      .catch(function () {});
  }

  function refreshFor(messageId) {
    refresh("[data-live-rows]", "data-live-rows");
    var timeline = document.querySelector("[data-live-timeline]");
    if (timeline && timeline.dataset.message === messageId) {
      refresh("[data-live-timeline]", "data-live-timeline");
    }
  }

  function onNotification(event) {
    var item = JSON.parse(event.data);
    toast(item);
    desktop(item);
    refreshFor(item.message_id);
  }

  // Events that make no notification (graded out) still refresh an open page.
  function onActivity(event) {
    refreshFor(JSON.parse(event.data).message_id);
  }

  var stream = new EventSource(script.dataset.stream);
  stream.addEventListener("notification", onNotification);
  stream.addEventListener("activity", onActivity);
  document.documentElement.dataset.stream = "connecting";
  stream.addEventListener("open", function () {
    document.documentElement.dataset.stream = "open";
  });

  var button = document.getElementById("enable-desktop");
  if (button && "Notification" in window && Notification.permission === "default") {
    button.hidden = false;
    button.addEventListener("click", function () {
      Notification.requestPermission().then(function () { button.hidden = true; });
    });
  }
})();
