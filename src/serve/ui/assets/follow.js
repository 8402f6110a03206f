// grit web UI: follow a running task's log. A <pre data-follow="URL"> reads the API's follow
// stream (the log as it grows, then the rest once the task ends) and appends it. Without
// JavaScript the page shows the log as it was when the page was rendered.
(function () {
  function follow(pre) {
    var url = pre.getAttribute("data-follow");
    pre.removeAttribute("data-follow");
    fetch(url, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok || !response.body) { return; }
      pre.textContent = "";
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      function pump() {
        return reader.read().then(function (part) {
          if (part.done) {
            pre.dispatchEvent(new CustomEvent("grit:log-ended", { bubbles: true }));
            return;
          }
          var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.textContent += decoder.decode(part.value, { stream: true });
          if (atEnd) { pre.scrollTop = pre.scrollHeight; }
          return pump();
        });
      }
      return pump();
    }).catch(function () {});
  }
  function scan() { document.querySelectorAll("pre[data-follow]").forEach(follow); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", scan); } else { scan(); }
})();
